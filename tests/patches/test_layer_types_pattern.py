"""Interleaved sliding windows follow `layer_types` (Gemma 3, Cohere2).

Patch: "transformers_utils: take sliding_window_pattern from layer_types"
(Tier: recommended).

transformers 4.53 (the series' bound, patch "requirements: bound the
dependencies that moved past vLLM 0.9.2") saves Gemma 3 and Cohere2
configs with `layer_types` and without `sliding_window_pattern`; loading
such a config gives the class default back (6 for Gemma 3, 4 for Cohere2)
whatever the layers are. vLLM 0.9.2's gemma3.py and commandr.py pick their
local layers from the pattern, so a fine-tune saved by the same stack with
another pattern runs its global layers with the window, or the reverse.

Runs on CPU: ModelConfig (its get_config) of a config.json written by this transformers,
with vllm._C stubbed and a V100 platform.
"""
import json
import os
import sys
import types
from pathlib import Path

import pytest

sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))

import vllm.config  # noqa: E402
import vllm.platforms  # noqa: E402

from .fakes import fake_cuda  # noqa: E402


@pytest.fixture(autouse=True)
def v100(monkeypatch):
    platform = fake_cuda(7, 0, "Tesla V100-SXM2-32GB")
    monkeypatch.setattr(vllm.platforms, "_current_platform", platform)
    monkeypatch.setattr(vllm.config, "current_platform", platform)
    # ModelConfig inspects the model class in a subprocess: same tree.
    tree = str(Path(vllm.__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        filter(None, [tree, os.environ.get("PYTHONPATH")])))


def saved(tmp_path: Path, config) -> str:
    """Save a transformers config as a checkpoint's config.json would be."""
    config.save_pretrained(tmp_path)
    return str(tmp_path)


def gemma3(**kwargs):
    from transformers import Gemma3TextConfig
    return Gemma3TextConfig(vocab_size=1000, hidden_size=64,
                            intermediate_size=128, num_attention_heads=4,
                            num_key_value_heads=2, head_dim=16,
                            sliding_window=32, torch_dtype="float16",
                            architectures=["Gemma3ForCausalLM"], **kwargs)


def local_layers(config) -> list[bool]:
    """Which layers gemma3.py / commandr.py give the window."""
    pattern = config.sliding_window_pattern
    return [bool((i + 1) % pattern)
            for i in range(config.num_hidden_layers)]


def test_gemma3_pattern_from_layer_types(tmp_path):
    # Three layers per group (two local, one global), as saved by 4.53.
    path = saved(tmp_path, gemma3(num_hidden_layers=6,
                                  sliding_window_pattern=3))
    written = json.loads((tmp_path / "config.json").read_text())
    assert written.get("sliding_window_pattern") is None
    model = vllm.config.ModelConfig(model=path, dtype="half")
    text = model.hf_text_config
    assert text.sliding_window_pattern == 3
    assert local_layers(text) == [t == "sliding_attention"
                                  for t in text.layer_types]
    # Interleaved: the window stays with the layers, not the scheduler.
    assert text.interleaved_sliding_window == 32
    assert model.get_sliding_window() is None


def test_cohere2_pattern_from_layer_types(tmp_path):
    from transformers import Cohere2Config
    config = Cohere2Config(vocab_size=1000, hidden_size=64,
                           intermediate_size=128, num_attention_heads=4,
                           num_key_value_heads=2, num_hidden_layers=4,
                           sliding_window=32, sliding_window_pattern=2,
                           torch_dtype="float16",
                           architectures=["Cohere2ForCausalLM"])
    model = vllm.config.ModelConfig(model=saved(tmp_path, config),
                                    dtype="half")
    assert model.hf_text_config.sliding_window_pattern == 2


def test_irregular_layer_types_refused_in_one_line(tmp_path):
    config = gemma3(num_hidden_layers=4, layer_types=[
        "sliding_attention", "full_attention", "full_attention",
        "sliding_attention"])
    with pytest.raises(ValueError) as excinfo:
        vllm.config.ModelConfig(model=saved(tmp_path, config), dtype="half")
    # ModelConfig (a pydantic dataclass) wraps the one-line ValueError.
    (line,) = [x for x in str(excinfo.value).splitlines()
               if "layer_types" in x]
    assert "gemma3_text" in line and "is not a repeating pattern" in line
    assert "check the checkpoint's config.json" in line


def test_published_gemma3_pattern_unchanged(tmp_path):
    """Upstream behaviour (passes on both trees): Google's configs carry
    pattern 6 and layer types that agree."""
    path = saved(tmp_path, gemma3(num_hidden_layers=12,
                                  sliding_window_pattern=6))
    config = json.loads((tmp_path / "config.json").read_text())
    config["sliding_window_pattern"] = 6
    (tmp_path / "config.json").write_text(json.dumps(config))
    model = vllm.config.ModelConfig(model=path, dtype="half")
    assert model.hf_text_config.sliding_window_pattern == 6


def test_qwen2_layer_types_left_alone(tmp_path):
    """Upstream behaviour (passes on both trees): Qwen2's window layers
    come from max_window_layers, not from a pattern."""
    from transformers import Qwen2Config
    config = Qwen2Config(vocab_size=1000, hidden_size=64,
                         intermediate_size=128, num_attention_heads=4,
                         num_key_value_heads=2, num_hidden_layers=4,
                         use_sliding_window=True, sliding_window=32,
                         max_window_layers=2, torch_dtype="float16",
                         architectures=["Qwen2ForCausalLM"])
    model = vllm.config.ModelConfig(model=saved(tmp_path, config),
                                    dtype="half")
    assert getattr(model.hf_text_config, "sliding_window_pattern",
                   None) is None
