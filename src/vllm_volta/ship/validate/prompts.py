"""The fixed prompts of the validation run (greedy decoding, temperature 0).

Plain completion prompts (no chat template) whose continuation is forced, so
a coherent model must name the expected word. The long prompt spans many KV
cache blocks (block size 16) so paged attention is exercised across blocks.
"""

from __future__ import annotations

from vllm_volta.ship.validate.garbage import PromptCase

_FILLER = (
    "The museum opens at nine in the morning and closes at six in the evening. "
    "Visitors walk through rooms of old maps, ship models and paintings of the harbour. "
    "A small cafe on the ground floor sells tea, coffee and bread. "
)

LONG_CONTEXT = (
    "Read the notes and answer the question.\n\n"
    + _FILLER * 6
    + "The guide who leads the tour on Sundays is called Margaret. "
    + _FILLER * 6
    + "\nQuestion: What is the name of the guide who leads the tour on Sundays?\nAnswer: The guide is called"
)

CASES: tuple[PromptCase, ...] = (
    PromptCase("capital", "The capital of France is", (("Paris",),)),
    PromptCase(
        "arithmetic",
        "Question: What is 12 plus 30?\nAnswer: 12 plus 30 is",
        (("42", "forty-two", "forty two"),),
    ),
    PromptCase(
        "planets",
        "The planets of the solar system, in order from the Sun, are Mercury,",
        (("Venus",), ("Earth",)),
    ),
    PromptCase("water", "A water molecule is made of two hydrogen atoms and one", (("oxygen",),)),
    PromptCase("long_context", LONG_CONTEXT, (("Margaret",),), max_tokens=16),
)
