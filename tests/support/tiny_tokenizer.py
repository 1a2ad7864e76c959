"""A small word-level tokenizer built locally, with a chat template.

The vocabulary is four special tokens and made-up words of two or three
syllables (``bako``, ``dimeru``...), in a fixed order: no download, no
training, the same ids everywhere. Text is words separated by spaces, so a
decoded continuation reads as words and the server's garbage detector has
something to judge. ``successor(word)`` is the next word of the cycle the
tiny models are built to follow (tiny_models.py).
"""
from __future__ import annotations

from pathlib import Path

SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")
PAD, BOS, EOS, UNK = range(4)
CONSONANTS = "bdfgklmnprstvz"
VOWELS = "aeiou"
VOCAB_SIZE = 512

# The user's turns, separated by spaces, after the begin token: the models
# continue the last word's cycle, so an answer is predictable.
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ message['content'] }} {% endfor %}")


def words(count: int = VOCAB_SIZE - len(SPECIALS)) -> list[str]:
    """``count`` distinct pronounceable words in a fixed order."""
    syllables = [c + v for v in VOWELS for c in CONSONANTS]
    out: list[str] = []
    step = 37  # coprime with len(syllables)**2: walks all pairs, mixed
    n = len(syllables)
    for i in range(n * n):
        j = (i * step) % (n * n)
        out.append(syllables[j // n] + syllables[j % n])
        if len(out) == count:
            return out
    for i in range(count - len(out)):
        out.append(syllables[i % n] + syllables[(i // n) % n] + "ru")
    return out


def vocab() -> dict[str, int]:
    table = {tok: i for i, tok in enumerate(SPECIALS)}
    for word in words():
        table[word] = len(table)
    return table


def successor(token_id: int) -> int:
    """The word that follows ``token_id`` in the cycle (ids 4..511)."""
    first = len(SPECIALS)
    return first + (token_id - first + 1) % (VOCAB_SIZE - first)


def build():
    """The tokenizer as a transformers PreTrainedTokenizerFast."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.WordLevel(vocab=vocab(), unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token="<s>", eos_token="</s>", unk_token="<unk>",
        pad_token="<pad>", chat_template=CHAT_TEMPLATE,
        model_max_length=1 << 20)


def save(directory: Path) -> Path:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    build().save_pretrained(directory)
    return directory
