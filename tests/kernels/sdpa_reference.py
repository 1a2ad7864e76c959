"""Naive attention and paged-KV-cache helpers for the TORCH_SDPA (CUDA) tests.

Everything here is plain torch and runs on any device: the CPU-level patch
tests (tests/patches/test_attention_sdpa_cuda.py) and the GPU test
(tests/kernels/test_sdpa_paged_gpu.py) share it. The reference computes in
float64 from the full key/value history of each sequence, never from the
paged cache, so it checks the backend's cache gathering too.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Optional

import torch

PAD_SLOT_ID = -1


@dataclasses.dataclass
class Seq:
    """One request of a batch.

    context: tokens already in the KV cache before this step.
    query: new tokens of this step (1 for a decode).
    decode: True for a decode request (query must be 1).
    """

    context: int
    query: int
    decode: bool = False

    @property
    def total(self) -> int:
        return self.context + self.query


def naive_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    scale: float,
    causal: bool = True,
    sliding_window: Optional[int] = None,
    alibi_slopes: Optional[torch.Tensor] = None,
    soft_cap: Optional[float] = None,
) -> torch.Tensor:
    """Attention of the last q.shape[0] positions of a sequence (lower-right
    aligned) over all of its keys, in float64. With ``soft_cap`` the
    scaled scores s become soft_cap * tanh(s / soft_cap) (Gemma 2).

    q: [q_len, heads, d]; k, v: [kv_len, kv_heads, d]. Returns float64
    [q_len, heads, d]. Query head h reads kv head h // (heads // kv_heads).
    """
    q_len, heads, _ = q.shape
    kv_len, kv_heads, _ = k.shape
    group = heads // kv_heads
    kv_index = torch.arange(heads, device=q.device) // group
    q64 = q.double()
    k64 = k.double()[:, kv_index]
    v64 = v.double()[:, kv_index]
    scores = torch.einsum("qhd,khd->hqk", q64, k64) * scale
    if soft_cap is not None:
        scores = torch.tanh(scores / soft_cap) * soft_cap
    q_pos = torch.arange(kv_len - q_len, kv_len, device=q.device)
    k_pos = torch.arange(kv_len, device=q.device)
    if alibi_slopes is not None:
        rel = (k_pos[None, :] - q_pos[:, None]).double()
        scores = scores + alibi_slopes.double().to(q.device)[:, None,
                                                             None] * rel
    if causal:
        dist = q_pos[:, None] - k_pos[None, :]
        allowed = dist >= 0
        if sliding_window is not None:
            allowed &= dist < sliding_window
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    return torch.einsum("hqk,khd->qhd", probs, v64)


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """The ALiBi slopes of the paper for a power-of-two head count."""
    start = 2.0**(-8.0 / num_heads)
    return torch.tensor([start**(i + 1) for i in range(num_heads)],
                        dtype=torch.float32)


def cache_x(dtype: torch.dtype) -> int:
    """vLLM's key-cache packing factor: 16 bytes per innermost vector."""
    return 16 // torch.tensor([], dtype=dtype).element_size()


def empty_kv_cache(num_blocks: int, block_size: int, num_kv_heads: int,
                   head_size: int, dtype: torch.dtype,
                   device) -> torch.Tensor:
    """[2, num_blocks, block_size * num_kv_heads * head_size], as vLLM's
    PagedAttention.get_kv_cache_shape, filled with noise so that reading an
    unwritten slot shows in the results."""
    return torch.randn(2,
                       num_blocks,
                       block_size * num_kv_heads * head_size,
                       dtype=dtype,
                       device=device) * 100


def split_kv_cache(kv_cache: torch.Tensor, num_kv_heads: int,
                   head_size: int):
    """Same views as vLLM's PagedAttention.split_kv_cache."""
    x = cache_x(kv_cache.dtype)
    num_blocks = kv_cache.shape[1]
    key_cache = kv_cache[0].view(num_blocks, num_kv_heads, head_size // x,
                                 -1, x)
    value_cache = kv_cache[1].view(num_blocks, num_kv_heads, head_size, -1)
    return key_cache, value_cache


def write_kv_torch(key: torch.Tensor, value: torch.Tensor,
                   key_cache: torch.Tensor, value_cache: torch.Tensor,
                   slot_mapping: torch.Tensor) -> None:
    """What vLLM's reshape_and_cache does, in torch (CPU tests)."""
    block_size = value_cache.shape[3]
    x = key_cache.shape[4]
    keep = slot_mapping >= 0
    slots = slot_mapping[keep].long()
    key, value = key[keep], value[keep]
    blocks, offsets = slots // block_size, slots % block_size
    n, kv_heads, d = key.shape
    key_cache[blocks, :, :, offsets, :] = key.view(n, kv_heads, d // x, x)
    value_cache[blocks, :, :, offsets] = value


@dataclasses.dataclass
class Batch:
    """A batch laid out the way vLLM's V0 GPU model runner lays it out."""

    seqs: list
    block_size: int
    block_tables: list  # physical blocks of each sequence (whole history)
    num_blocks: int
    sliding_window: Optional[int] = None

    @property
    def prefills(self):
        return [s for s in self.seqs if not s.decode]

    @property
    def decodes(self):
        return [s for s in self.seqs if s.decode]

    def slots(self, i: int, start: int, end: int) -> list:
        table = self.block_tables[i]
        return [
            table[p // self.block_size] * self.block_size +
            p % self.block_size for p in range(start, end)
        ]

    def decode_view(self, i: int):
        """(seq_len, block table) that the V0 runner hands the decode
        kernel for sequence i: with a sliding window, only the last
        window-aligned blocks (model_runner._compute_for_sliding_window)."""
        seq = self.seqs[i]
        table = self.block_tables[i]
        seq_len = seq.total
        if self.sliding_window is None:
            return seq_len, table[:math.ceil(seq_len / self.block_size)]
        window_blocks = math.ceil(self.sliding_window / self.block_size)
        suffix = seq_len % self.block_size
        seq_len = min(seq_len, window_blocks * self.block_size + suffix)
        nblocks = window_blocks + (1 if suffix else 0)
        used = table[:math.ceil(seq.total / self.block_size)]
        return seq_len, used[-nblocks:]


def make_batch(seqs: list,
               block_size: int,
               sliding_window: Optional[int] = None,
               seed: int = 0) -> Batch:
    """Prefills first, then decodes (the V0 order); each sequence gets
    enough physical blocks for its whole history, taken from a shuffled
    pool so that logical and physical order differ."""
    assert all(not s.decode for s in seqs[:len([s for s in seqs
                                                 if not s.decode])])
    assert all(s.query == 1 for s in seqs if s.decode)
    need = [math.ceil(s.total / block_size) for s in seqs]
    num_blocks = sum(need) + 3
    gen = torch.Generator().manual_seed(seed)
    pool = torch.randperm(num_blocks, generator=gen).tolist()
    tables, at = [], 0
    for n in need:
        tables.append(pool[at:at + n])
        at += n
    return Batch(seqs, block_size, tables, num_blocks, sliding_window)


def batch_metadata_fields(batch: Batch, device, graph_block_width=None):
    """Keyword arguments of a V0 attention metadata for the batch, filled
    as vllm.attention.backends.utils.CommonMetadataBuilder fills them.

    A prefill with context > 0 gets its block table (prefix caching or
    chunked prefill); a prefill without context gets an empty one unless
    another prefill of the batch has context (chunked prefill gives every
    prompt its table). Decodes get the (window-trimmed) table.
    """
    seqs = batch.seqs
    chunked = any(s.context > 0 for s in batch.prefills)
    slot_mapping, tables, seq_lens = [], [], []
    for i, s in enumerate(seqs):
        slot_mapping += batch.slots(i, s.context, s.total)
        if s.decode:
            seq_len, table = batch.decode_view(i)
            seq_lens.append(seq_len)
            tables.append(table)
        else:
            seq_lens.append(s.total)
            tables.append(
                batch.block_tables[i][:math.ceil(s.total /
                                                 batch.block_size)]
                if chunked else [])
    query_lens = [s.query for s in seqs]
    width = max([len(t) for t in tables] + [0])
    table_tensor = torch.zeros(len(seqs), width, dtype=torch.int32)
    for i, t in enumerate(tables):
        table_tensor[i, :len(t)] = torch.tensor(t, dtype=torch.int32)
    num_prefills = len(batch.prefills)
    prefill_seq_lens = [s.total for s in batch.prefills]
    decode_seq_lens = seq_lens[num_prefills:]
    qsl = [0]
    for n in query_lens:
        qsl.append(qsl[-1] + n)
    ssl = [0]
    for n in seq_lens:
        ssl.append(ssl[-1] + n)
    return dict(
        num_prefills=num_prefills,
        num_prefill_tokens=sum(s.query for s in batch.prefills),
        num_decode_tokens=len(batch.decodes),
        slot_mapping=torch.tensor(slot_mapping,
                                  dtype=torch.long,
                                  device=device),
        multi_modal_placeholder_index_maps={},
        enable_kv_scales_calculation=True,
        seq_lens=seq_lens,
        seq_lens_tensor=torch.tensor(seq_lens,
                                     dtype=torch.int32,
                                     device=device),
        max_query_len=max(query_lens),
        max_prefill_seq_len=max(prefill_seq_lens, default=0),
        max_decode_seq_len=max(decode_seq_lens, default=0),
        query_start_loc=torch.tensor(qsl, dtype=torch.int32, device=device),
        seq_start_loc=torch.tensor(ssl, dtype=torch.int32, device=device),
        context_lens_tensor=torch.tensor([s.context for s in seqs],
                                         dtype=torch.int32,
                                         device=device),
        block_tables=table_tensor.to(device),
        use_cuda_graph=False,
    )


def make_qkv(batch: Batch, num_heads: int, num_kv_heads: int,
             head_size: int, dtype: torch.dtype, device, seed: int = 0):
    """Per-sequence full histories: q [total, H, D], k/v [total, KVH, D]."""
    gen = torch.Generator(device="cpu").manual_seed(seed)
    out = []
    for s in batch.seqs:
        q = torch.randn(s.total, num_heads, head_size, generator=gen)
        k = torch.randn(s.total, num_kv_heads, head_size, generator=gen)
        v = torch.randn(s.total, num_kv_heads, head_size, generator=gen)
        out.append(tuple(t.to(dtype=dtype, device=device) for t in (q, k, v)))
    return out


def step_inputs(batch: Batch, histories):
    """The step's flattened query/key/value (new tokens only)."""
    qs, ks, vs = [], [], []
    for s, (q, k, v) in zip(batch.seqs, histories):
        qs.append(q[s.context:])
        ks.append(k[s.context:])
        vs.append(v[s.context:])
    return torch.cat(qs), torch.cat(ks), torch.cat(vs)


def context_slot_mapping(batch: Batch, device) -> torch.Tensor:
    """Slots of every sequence's context tokens (filled before the step)."""
    slots = []
    for i, s in enumerate(batch.seqs):
        slots += batch.slots(i, 0, s.context)
    return torch.tensor(slots, dtype=torch.long, device=device)


def context_kv(batch: Batch, histories):
    ks = [k[:s.context] for s, (_, k, _) in zip(batch.seqs, histories)]
    vs = [v[:s.context] for s, (_, _, v) in zip(batch.seqs, histories)]
    return torch.cat(ks), torch.cat(vs)


def reference_outputs(batch: Batch, histories, scale: float,
                      alibi: Optional[torch.Tensor] = None,
                      soft_cap: Optional[float] = None,
                      layer_window: Optional[int] = None) -> list:
    """Per-sequence float64 reference outputs of the step's queries.

    Prefills: exact causal (sliding-window) attention over the whole
    history. Decodes: attention of the last token over the tokens the V0
    runner hands the decode kernel (the window-trimmed tail). With
    ``layer_window`` (a per-layer window that the runner does not trim,
    as for Gemma 2/3) every query, decodes included, sees exactly the last
    ``layer_window`` positions."""
    outs = []
    for i, (s, (q, k, v)) in enumerate(zip(batch.seqs, histories)):
        if layer_window is not None:
            outs.append(
                naive_attention(q[s.context:], k, v, scale, causal=True,
                                sliding_window=layer_window,
                                alibi_slopes=alibi, soft_cap=soft_cap))
        elif s.decode:
            seq_len, _ = batch.decode_view(i)
            outs.append(
                naive_attention(q[-1:],
                                k[s.total - seq_len:],
                                v[s.total - seq_len:],
                                scale,
                                causal=True,
                                alibi_slopes=alibi,
                                soft_cap=soft_cap))
        else:
            outs.append(
                naive_attention(q[s.context:],
                                k,
                                v,
                                scale,
                                causal=True,
                                sliding_window=batch.sliding_window,
                                alibi_slopes=alibi,
                                soft_cap=soft_cap))
    return outs


def paged_decode_torch(query, key_cache, value_cache, block_tables,
                       seq_lens, scale, num_kv_heads, alibi=None):
    """What paged_attention_v1/v2 compute, in torch (CPU tests).

    query [n, H, D]; key_cache [B, KVH, D/x, bs, x]; value_cache
    [B, KVH, D, bs]."""
    block_size = value_cache.shape[3]
    out = torch.empty_like(query)
    for i in range(query.shape[0]):
        n = int(seq_lens[i])
        pos = torch.arange(n, device=query.device)
        blocks = block_tables[i][pos // block_size].long()
        offs = pos % block_size
        k = key_cache[blocks, :, :, offs, :].reshape(n, num_kv_heads, -1)
        v = value_cache[blocks, :, :, offs]
        out[i] = naive_attention(query[i:i + 1], k, v, scale, True, None,
                                 alibi)[0].to(query.dtype)
    return out


def efficient_attention_torch(query, key, value, cu_seqlens_q, cu_seqlens_k,
                              max_seqlen_q, max_seqlen_k, mask, scale,
                              window, return_lse):
    """Stand-in of one launch of torch's memory-efficient varlen kernel
    (``torch.ops.aten._efficient_attention_forward``), in float64, with
    the kernel's conventions as measured on a GPU:

    - query/key/value [1, tokens, heads, d] (as many KV heads as query
      heads), sequence i at rows cu_seqlens[i]:cu_seqlens[i + 1];
    - mask 0: none; 1: causal from the top left (query r sees keys <= r);
      2: causal from the bottom right (query r of q_len sees keys
      <= r + k_len - q_len);
    - window w (with a causal mask): only keys at distance < w;
    - the log-sum-exp is [num_seqs, heads, max_seqlen_q rounded up to 32],
      row r of sequence i at [i, :, r], +inf past the sequence's queries.
    Returns (output in query's dtype, lse float32 or None).
    """
    _, _, heads, _ = query.shape
    assert key.shape[2] == heads, "the kernel needs as many KV heads as Q"
    cq = cu_seqlens_q.tolist()
    ck = cu_seqlens_k.tolist()
    out = torch.zeros_like(query)
    padded = -(-max_seqlen_q // 32) * 32
    lse = torch.full((len(cq) - 1, heads, padded), float("inf"),
                     dtype=torch.float32, device=query.device)
    for i in range(len(cq) - 1):
        q = query[0, cq[i]:cq[i + 1]].double()
        k = key[0, ck[i]:ck[i + 1]].double()
        v = value[0, ck[i]:ck[i + 1]].double()
        q_len, k_len = q.shape[0], k.shape[0]
        assert q_len <= max_seqlen_q and k_len <= max_seqlen_k
        scores = torch.einsum("qhd,khd->hqk", q, k) * scale
        if mask:
            shift = 0 if mask == 1 else k_len - q_len
            dist = (torch.arange(q_len, device=q.device)[:, None] + shift -
                    torch.arange(k_len, device=q.device)[None, :])
            allowed = dist >= 0
            if window is not None:
                allowed &= dist < window
            scores = scores.masked_fill(~allowed, float("-inf"))
        if k_len == 0:
            lse[i, :, :q_len] = 0.0  # what the kernel returns: no keys
            continue
        lse[i, :, :q_len] = torch.logsumexp(scores, dim=-1).float()
        probs = torch.softmax(scores, dim=-1).nan_to_num(0.0)
        out[0, cq[i]:cq[i + 1]] = torch.einsum("hqk,khd->qhd", probs,
                                               v).to(query.dtype)
    return out, (lse if return_lse else None)
