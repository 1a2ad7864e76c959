"""Encoder/decoder models accept the CUDA TORCH_SDPA backend.

Patch: "attention: let encoder/decoder models use TORCH_SDPA on CUDA"
(Tier: critical).

Once TORCH_SDPA is the default on SM 7.x, encoder/decoder models (BART,
Whisper, mllama, ...) get it on a V100. The backend implements encoder and
cross-attention (tests/patches/test_attention_sdpa_cuda.py checks them);
this patch lets the V0 encoder/decoder runner and the CUDA graph state take
it: upstream refuses any backend but XFormers and FlashAttention there,
with an override error and with asserts at graph capture.

Runs on CPU: the tree's vllm with ``vllm._C`` stubbed.
"""
import importlib

import numpy as np
import pytest
import torch

from vllm.attention.backends.utils import CommonAttentionState
from vllm.attention.selector import global_force_attn_backend_context_manager
from vllm.platforms import _Backend


def backend_cls():
    return importlib.import_module(
        "vllm.attention.backends.torch_sdpa_cuda").TorchSDPACudaBackend


def enc_dec_runner_cls():
    from vllm.worker.enc_dec_model_runner import EncoderDecoderModelRunner
    return EncoderDecoderModelRunner


@pytest.fixture(autouse=True)
def _no_env_backend(monkeypatch):
    monkeypatch.delenv("VLLM_ATTENTION_BACKEND", raising=False)


@pytest.mark.parametrize("how", ["env", "global"])
def test_runner_accepts_torch_sdpa_override(monkeypatch, how):
    runner = enc_dec_runner_cls()
    if how == "env":
        monkeypatch.setenv("VLLM_ATTENTION_BACKEND", "TORCH_SDPA")
        runner._maybe_force_supported_attention_backend(None)
    else:
        with global_force_attn_backend_context_manager(_Backend.TORCH_SDPA):
            runner._maybe_force_supported_attention_backend(None)


def test_runner_still_refuses_other_backends(monkeypatch):
    """The refusal names the backends that work, TORCH_SDPA among them."""
    runner = enc_dec_runner_cls()
    monkeypatch.setenv("VLLM_ATTENTION_BACKEND", "FLASHINFER")
    with pytest.raises(NotImplementedError, match="Torch SDPA"):
        runner._maybe_force_supported_attention_backend(None)


def test_cuda_graph_state_takes_torch_sdpa_for_enc_dec(monkeypatch):
    """Capture, buffer collection and replay of an encoder/decoder decode
    batch with the TORCH_SDPA backend."""
    backend = backend_cls()

    class Runner:
        attn_backend = backend
        device = "cpu"
        max_seq_len_to_capture = 64
        graph_block_tables = np.zeros((8, 4), dtype=np.int32)

    def enc_dec_capture_fields(self, batch_size, attn_metadata):
        # Upstream's version allocates on CUDA; same fields, on CPU.
        attn_metadata.cross_slot_mapping = torch.tensor([], dtype=torch.long)
        attn_metadata.cross_block_tables = torch.ones(batch_size,
                                                      4,
                                                      dtype=torch.int32)
        attn_metadata.encoder_seq_lens = [1] * batch_size
        attn_metadata.encoder_seq_lens_tensor = torch.ones(batch_size,
                                                           dtype=torch.int32)
        attn_metadata.max_encoder_seq_len = 64
        attn_metadata.num_encoder_tokens = 0

    monkeypatch.setattr(CommonAttentionState,
                        "_update_captured_metadata_for_enc_dec_model",
                        enc_dec_capture_fields)
    state = CommonAttentionState(Runner())
    with state.graph_capture(max_batch_size=8):
        meta = state.graph_capture_get_metadata_for_batch(
            4, is_encoder_decoder_model=True)
        assert meta.is_all_cross_attn_metadata_set
        buffers = state.get_graph_input_buffers(meta,
                                                is_encoder_decoder_model=True)
        assert "cross_block_tables" in buffers
        replay = backend.make_metadata(**{
            **meta.asdict_zerocopy(
                {"_cached_prefill_metadata", "_cached_decode_metadata"}),
            "encoder_seq_lens_tensor":
            torch.tensor([3, 5, 7, 9], dtype=torch.int32),
        })
        state.prepare_graph_input_buffers(buffers,
                                          replay,
                                          is_encoder_decoder_model=True)
        assert buffers["encoder_seq_lens_tensor"].tolist() == [3, 5, 7, 9]
