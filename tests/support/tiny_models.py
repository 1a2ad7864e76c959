"""Tiny random-weight models, one per family, made locally with transformers.

Each family is a small config of the real architecture (GQA, QKV bias,
sliding windows, soft-capping, MoE routing...) with weights drawn from a
fixed seed, saved with the tiny tokenizer (tiny_tokenizer.py) as a model
directory vLLM and transformers both load. No hub, no network.

Peaked next-token distributions. Random weights give flat logits and
greedy decoding then hangs on fp16 ties. Where the output head is its own
matrix, row ``successor(w)`` of it is the input embedding of ``w`` scaled up,
so the logits of the word that follows the current one in the vocabulary's
cycle stand out by about ``PEAK`` nats, and the layers (linear weights of
std ``initializer_range``) move every logit by a few nats: the continuation
depends on the context but is rarely a near-tie. Families whose head is tied
to the embedding (Gemma 2, BART) get embeddings large enough that the head's
logits spread over several nats.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Callable

from . import tiny_tokenizer as tt

PEAK = 14.0
SEED = 1234
HIDDEN = 256
HEADS = 4
HEAD_DIM = 64


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    task: str                      # "generate" | "embed" | "encdec"
    make_config: Callable[[], object]
    what: str                      # what the family exercises
    dtype: str = "float16"         # the config's torch_dtype
    max_model_len: int = 2048


def _common() -> dict:
    return dict(vocab_size=tt.VOCAB_SIZE, hidden_size=HIDDEN,
                intermediate_size=512, num_hidden_layers=2,
                num_attention_heads=HEADS, num_key_value_heads=2,
                max_position_embeddings=4096, rms_norm_eps=1e-6,
                initializer_range=0.03, tie_word_embeddings=False,
                pad_token_id=tt.PAD, bos_token_id=tt.BOS,
                eos_token_id=tt.EOS)


def _llama():
    from transformers import LlamaConfig
    c = _common()
    # Room for the 33,000-token prompt (past 32K, V0's chunked default).
    c["max_position_embeddings"] = 40960
    return LlamaConfig(head_dim=HEAD_DIM, **c)


def _qwen2():
    from transformers import Qwen2Config
    return Qwen2Config(use_sliding_window=False, **_common())


def _mistral():
    from transformers import MistralConfig
    return MistralConfig(sliding_window=64, head_dim=HEAD_DIM, **_common())


def _gemma2():
    from transformers import Gemma2Config
    c = _common()
    c.update(tie_word_embeddings=True, initializer_range=0.02)
    # Gemma 2 checkpoints carry both names; vLLM's gemma2.py reads both.
    return Gemma2Config(hidden_act="gelu_pytorch_tanh", head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM,
                        sliding_window=32, attn_logit_softcapping=50.0,
                        final_logit_softcapping=30.0,
                        hidden_activation="gelu_pytorch_tanh", **c)


def _gemma3():
    from transformers import Gemma3TextConfig
    c = _common()
    c.update(tie_word_embeddings=True, initializer_range=0.02)
    # Layer 0 local (window 32), layer 1 global, as Gemma 3's 5:1 pattern
    # shrunk to two layers.
    return Gemma3TextConfig(hidden_activation="gelu_pytorch_tanh",
                            head_dim=HEAD_DIM, query_pre_attn_scalar=HEAD_DIM,
                            sliding_window=32, sliding_window_pattern=2,
                            rope_local_base_freq=10000.0, **c)


def _mixtral():
    from transformers import MixtralConfig
    return MixtralConfig(num_local_experts=4, num_experts_per_tok=2,
                         sliding_window=None, head_dim=HEAD_DIM, **_common())


def _qwen2_moe():
    from transformers import Qwen2MoeConfig
    return Qwen2MoeConfig(num_experts=8, num_experts_per_tok=4,
                          moe_intermediate_size=128,
                          shared_expert_intermediate_size=256,
                          decoder_sparse_step=1, norm_topk_prob=False,
                          use_sliding_window=False, **_common())


def _deepseek():
    from transformers import DeepseekV3Config
    c = _common()
    c.pop("num_key_value_heads")
    # vLLM's deepseek_v2.py reads topk_method, scoring_func and
    # moe_layer_freq; DeepSeek-V3 checkpoints carry them, transformers'
    # config keeps them as extras.
    return DeepseekV3Config(
        num_key_value_heads=HEADS, q_lora_rank=96, kv_lora_rank=64,
        qk_nope_head_dim=32, qk_rope_head_dim=32, v_head_dim=32,
        n_routed_experts=8, n_shared_experts=1, num_experts_per_tok=4,
        n_group=4, topk_group=2, first_k_dense_replace=1,
        moe_intermediate_size=128, routed_scaling_factor=2.5,
        norm_topk_prob=True, rope_scaling=None, rope_interleave=True,
        topk_method="noaux_tc", scoring_func="sigmoid", moe_layer_freq=1,
        **c)


def _bert():
    from transformers import BertConfig
    return BertConfig(vocab_size=tt.VOCAB_SIZE, hidden_size=HIDDEN,
                      num_hidden_layers=2, num_attention_heads=HEADS,
                      intermediate_size=512, max_position_embeddings=512,
                      pad_token_id=tt.PAD)


def _bart():
    from transformers import BartConfig
    return BartConfig(vocab_size=tt.VOCAB_SIZE, d_model=HIDDEN,
                      encoder_layers=2, decoder_layers=2,
                      encoder_attention_heads=HEADS,
                      decoder_attention_heads=HEADS, encoder_ffn_dim=512,
                      decoder_ffn_dim=512, max_position_embeddings=1024,
                      pad_token_id=tt.PAD, bos_token_id=tt.BOS,
                      eos_token_id=tt.EOS, decoder_start_token_id=tt.EOS,
                      forced_bos_token_id=None, forced_eos_token_id=None,
                      scale_embedding=False, init_std=0.02)


FAMILIES = {f.name: f for f in (
    Family("llama", "generate", _llama, "GQA 4/2, RoPE; 40k positions",
           max_model_len=33280),
    Family("qwen2", "generate", _qwen2, "QKV bias, GQA"),
    Family("mistral", "generate", _mistral,
           "sliding window 64, prompts longer than the window"),
    Family("gemma2", "generate", _gemma2,
           "interleaved window 32, attention and final soft-capping, "
           "bfloat16 config (vLLM picks the dtype)", dtype="bfloat16"),
    # Saved as transformers 4.53 saves it: layer_types, no
    # sliding_window_pattern (patch 0025 derives the pattern from them).
    Family("gemma3", "generate", _gemma3,
           "gemma3_text: local window 32 and global layers interleaved "
           "(layer_types only), local RoPE base, bfloat16 config",
           dtype="bfloat16"),
    Family("mixtral", "generate", _mixtral, "MoE 4 experts, top-2"),
    Family("qwen2_moe", "generate", _qwen2_moe,
           "MoE 8 experts, top-4, shared expert"),
    Family("deepseek", "generate", _deepseek,
           "deepseek_v3: MLA weights (MLA off on 7.0), grouped top-k "
           "(4 groups, 2 kept), sigmoid scores with bias, shared expert"),
    Family("bert", "embed", _bert, "encoder-only embeddings (CLS)"),
    Family("bart", "encdec", _bart, "encoder/decoder, cross-attention"),
)}


def _model_class(family: Family):
    import transformers
    if family.task == "embed":
        return transformers.BertModel
    if family.task == "encdec":
        return transformers.BartForConditionalGeneration
    return transformers.AutoModelForCausalLM


def _peak(model, family: Family) -> None:
    """Make next-token distributions peaked (see the module docstring)."""
    import torch

    gen = torch.Generator().manual_seed(SEED + 1)
    emb = model.get_input_embeddings().weight
    vocab, hidden = emb.shape
    if family.task == "embed":
        return
    head = model.get_output_embeddings()
    tied = head is None or head.weight.data_ptr() == emb.data_ptr()
    with torch.no_grad():
        if tied:
            # Tied head: logits are embedding . final hidden state.
            # Special tokens get no embedding, so that none is predicted
            # (the decoder's start token would predict itself).
            scale = 0.1 if family.task == "encdec" else 2 * PEAK / hidden
            table = torch.randn(vocab, hidden, generator=gen) * scale
            table[:len(tt.SPECIALS)] = 0
            emb.copy_(table)
            return
        table = torch.randn(vocab, hidden, generator=gen)
        emb.copy_(table)
        rows = torch.zeros_like(head.weight)
        for word in range(len(tt.SPECIALS), vocab):
            rows[tt.successor(word)] = table[word] * (PEAK / hidden)
        head.weight.copy_(rows)


def _drop(directory: Path, key: str) -> None:
    """Remove one tensor from the saved weights. BART's final_logits_bias
    (zeros here; transformers keeps zeros when it is absent) has no
    parameter in vLLM 0.9.2's BART, whose loader stops on it with a
    KeyError: an upstream loader limit, not a Volta one."""
    from safetensors.torch import load_file, save_file

    path = directory / "model.safetensors"
    tensors = load_file(path)
    if tensors.pop(key, None) is not None:
        save_file(tensors, path, metadata={"format": "pt"})


def make(name: str, root: Path) -> Path:
    """Write family ``name``'s model and tokenizer under ``root``; return the
    directory. Same seed, same weights: an existing directory is kept."""
    import torch

    family = FAMILIES[name]
    directory = Path(root) / name
    if (directory / "config.json").is_file():
        return directory
    config = family.make_config()
    config.torch_dtype = family.dtype
    torch.manual_seed(SEED)
    cls = _model_class(family)
    build = getattr(cls, "from_config", None) or cls._from_config
    model = build(config, attn_implementation="eager")
    _peak(model, family)
    model = model.to(getattr(torch, family.dtype))
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory, safe_serialization=True)
    if family.task == "encdec":
        _drop(directory, "final_logits_bias")
    tt.save(directory)
    meta = {"family": name, "task": family.task, "what": family.what,
            "dtype": family.dtype, "max_model_len": family.max_model_len}
    (directory / "vllm_volta_tiny.json").write_text(json.dumps(meta))
    return directory


# --- 4-bit checkpoints ---------------------------------------------------------

GROUP_SIZE = 128


@dataclasses.dataclass(frozen=True)
class Quantized:
    """A family's tiny model written as a 4-bit checkpoint (quant_pack.py).

    ``make_quantized`` writes two directories: ``<name>``, the checkpoint
    vLLM loads (AWQ, compressed-tensors pack-quantized or GPTQ), and
    ``<name>-reference``, the plain family with the dequantized weights in
    fp16, which transformers loads as the reference."""
    name: str
    family: str
    scheme: str                    # "awq" | "w4a16" | "gptq" (SCHEMES)
    what: str


QUANTIZED = {q.name: q for q in (
    Quantized("llama-awq", "llama", "awq",
              "AWQ int4 g128 with zero points: the Triton AWQ kernels"),
    Quantized("qwen2_moe-awq", "qwen2_moe", "awq",
              "AWQ int4 g128, experts on the moe_wna16 kernels"),
    Quantized("llama-w4a16", "llama", "w4a16",
              "compressed-tensors W4A16 g128 symmetric: the Exllama kernel"),
    Quantized("qwen2_moe-w4a16", "qwen2_moe", "w4a16",
              "compressed-tensors W4A16 g128, experts on the moe_wna16 "
              "kernels"),
    # vLLM resolves GPTQ to `gptq` on 7.0 (GPTQ-Marlin needs 8.0): the
    # dense layers on the GPTQ (Exllama) kernel, the experts on moe_wna16.
    Quantized("qwen2_moe-gptq", "qwen2_moe", "gptq",
              "GPTQ int4 g128 symmetric: linear layers on the GPTQ kernel, "
              "experts on the moe_wna16 kernels"),
    Quantized("mixtral-gptq", "mixtral", "gptq",
              "GPTQ int4 g128 symmetric Mixtral: FusedMoE experts on the "
              "moe_wna16 kernels, not QuantMixtral's per-expert loop"),
)}

# The linear layers the checkpoints quantize: vLLM builds these with the
# checkpoint's quantization method. The routers (`mlp.gate`, Mixtral's
# `block_sparse_moe.gate`), Qwen2-MoE's `shared_expert_gate`, the
# embeddings and the output head stay fp16.
_QUANTIZED_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                     "up_proj", "down_proj")
# Mixtral's experts: `block_sparse_moe.experts.N.w1` (gate), `w3` (up),
# `w2` (down).
_QUANTIZED_EXPERT = ("w1", "w2", "w3")


def quantized_module(key: str) -> bool:
    """Whether tensor ``key`` of a family's checkpoint is a quantized
    linear weight."""
    parts = key.split(".")
    if not (key.startswith("model.layers.") and parts[-1] == "weight"
            and len(parts) > 2):
        return False
    return parts[-2] in _QUANTIZED_LINEAR or (
        parts[-2] in _QUANTIZED_EXPERT and len(parts) > 4
        and parts[-4] == "experts")


def family_of(name: str) -> Family:
    """The family of a plain or quantized model name."""
    return FAMILIES[QUANTIZED[name].family if name in QUANTIZED else name]


def reference_dir(root: Path, name: str) -> Path:
    """Where the transformers reference of model ``name`` lives."""
    root = Path(root)
    return root / f"{name}-reference" if name in QUANTIZED else root / name


def make_quantized(name: str, root: Path) -> Path:
    """Write quantized model ``name`` (QUANTIZED) and its dequantized
    reference under ``root`` from the family's seeded weights; return the
    checkpoint's directory. An existing directory is kept."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from . import quant_pack

    spec = QUANTIZED[name]
    root = Path(root)
    directory = root / name
    reference = reference_dir(root, name)
    if (directory / "config.json").is_file() and \
            (reference / "config.json").is_file():
        return directory
    base = make(spec.family, root)
    tensors = load_file(base / "model.safetensors")
    packed, dequantized = {}, {}
    for key in sorted(tensors):
        tensor = tensors[key]
        if not quantized_module(key):
            packed[key] = dequantized[key] = tensor
            continue
        parts, weight = quant_pack.quantize(spec.scheme, tensor, GROUP_SIZE)
        module = key[:-len(".weight")]
        for suffix, value in parts.items():
            packed[f"{module}.{suffix}"] = value.contiguous()
        dequantized[key] = weight.to(tensor.dtype).contiguous()
    _, _, make_config = quant_pack.SCHEMES[spec.scheme]
    for target, weights in ((directory, packed), (reference, dequantized)):
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(base, target)
        save_file(weights, target / "model.safetensors",
                  metadata={"format": "pt"})
    config = json.loads((directory / "config.json").read_text())
    config["quantization_config"] = make_config(GROUP_SIZE)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    for target, what in ((directory, spec.what),
                         (reference, f"dequantized reference of {name}")):
        meta = json.loads((target / "vllm_volta_tiny.json").read_text())
        meta.update({"what": what, "quantized": name,
                     "scheme": spec.scheme, "group_size": GROUP_SIZE})
        (target / "vllm_volta_tiny.json").write_text(json.dumps(meta))
    return directory
