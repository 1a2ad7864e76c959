"""MiniCPM-O's audio encoder with the transformers the series installs (4.53).

Patch: "minicpmo: build the Whisper attention of transformers 4.53"
(Tier: critical).

transformers 4.53 removed WHISPER_ATTENTION_CLASSES (one WhisperAttention
now dispatches on config._attn_implementation); vLLM 0.9.2's minicpmo.py
imported it at module level, so the model could not even be imported.
Runs on CPU with the tree's vllm (vllm._C stubbed by conftest).
"""
import pytest
import transformers
from packaging.version import Version


def test_minicpmo_encoder_layer_builds():
    from transformers import WhisperConfig

    from vllm.model_executor.models import minicpmo

    config = WhisperConfig(d_model=32, encoder_attention_heads=4, encoder_ffn_dim=64)
    config._attn_implementation = "eager"
    layer = minicpmo.MiniCPMWhisperEncoderLayer(config, layer_idx=0)
    from transformers.models.whisper.modeling_whisper import WhisperAttention
    assert isinstance(layer.self_attn, WhisperAttention)
    assert layer.self_attn.num_heads == 4 and layer.self_attn.embed_dim == 32


def test_transformers_under_test_has_no_whisper_attention_classes():
    """The case the patch is for: the CI's transformers (4.53.x) lacks the old name."""
    if Version(transformers.__version__) < Version("4.53"):
        pytest.skip(f"transformers {transformers.__version__} still has WHISPER_ATTENTION_CLASSES")
    import transformers.models.whisper.modeling_whisper as whisper
    assert not hasattr(whisper, "WHISPER_ATTENTION_CLASSES")
