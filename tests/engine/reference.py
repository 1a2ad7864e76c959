"""The transformers reference: eager attention, float32, the same weights.

Greedy decoding recomputes the whole sequence at every step (no KV cache),
so the reference shares no caching or masking shortcut with the engine
under test. Each step keeps the chosen token and the top-5 (token,
log-probability) pairs of the full float32 distribution.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

TOP = 5


@dataclasses.dataclass
class Greedy:
    tokens: list[int]
    top: list[list[tuple[int, float]]]  # per step: TOP (id, logprob), best first

    def to_json(self) -> dict:
        return {"tokens": self.tokens,
                "top": [[[i, lp] for i, lp in step] for step in self.top]}

    @classmethod
    def from_json(cls, data: dict) -> "Greedy":
        return cls(list(data["tokens"]),
                   [[(int(i), float(lp)) for i, lp in step]
                    for step in data["top"]])


def load(model_dir: Path, task: str, device: str = "cpu"):
    import torch
    import transformers

    cls = {"generate": transformers.AutoModelForCausalLM,
           "embed": transformers.AutoModel,
           "encdec": transformers.AutoModelForSeq2SeqLM}[task]
    model = cls.from_pretrained(model_dir, torch_dtype=torch.float32,
                                attn_implementation="eager")
    return model.to(device).eval()


def _step(logits) -> tuple[int, list[tuple[int, float]]]:
    import torch

    logprobs = torch.log_softmax(logits.float(), dim=-1)
    values, ids = torch.topk(logprobs, TOP)
    top = [(int(i), float(v)) for i, v in zip(ids.tolist(), values.tolist())]
    return top[0][0], top


def greedy(model, prompt: Sequence[int], steps: int,
           decoder_prompt: Optional[Sequence[int]] = None) -> Greedy:
    """``steps`` greedy tokens after ``prompt`` (decoder-only), or after
    ``decoder_prompt`` with ``prompt`` as the encoder input (BART)."""
    import torch

    device = next(model.parameters()).device
    out = Greedy([], [])
    with torch.no_grad():
        if decoder_prompt is None:
            seq = list(prompt)
            for _ in range(steps):
                ids = torch.tensor([seq], device=device)
                token, top = _step(model(input_ids=ids,
                                         use_cache=False).logits[0, -1])
                out.tokens.append(token)
                out.top.append(top)
                seq.append(token)
            return out
        enc = torch.tensor([list(prompt)], device=device)
        encoded = model.get_encoder()(input_ids=enc)
        seq = list(decoder_prompt)
        for _ in range(steps):
            dec = torch.tensor([seq], device=device)
            logits = model(encoder_outputs=encoded, decoder_input_ids=dec,
                           use_cache=False).logits[0, -1]
            token, top = _step(logits)
            out.tokens.append(token)
            out.top.append(top)
            seq.append(token)
    return out


def embedding(model, prompt: Sequence[int]) -> list[float]:
    """The CLS hidden state, L2-normalised (vLLM's default BERT pooling)."""
    import torch

    device = next(model.parameters()).device
    with torch.no_grad():
        ids = torch.tensor([list(prompt)], device=device)
        cls = model(input_ids=ids).last_hidden_state[0, 0]
        return torch.nn.functional.normalize(cls, dim=0).tolist()
