"""Rotary embeddings on a CUDA build without vllm-flash-attn.

Patch: "rotary: use the PyTorch rotary when vllm-flash-attn is not built"
(Tier: critical).

A Volta-only build compiles no vllm-flash-attn (patch 0001), so the wheel has
``vllm/vllm_flash_attn/{__init__,flash_attn_interface}.py`` from the sdist and
nothing else. vLLM 0.9.2 imports ``vllm.vllm_flash_attn.layers.rotary`` at
module level in ``rotary_embedding.py`` whenever the platform is CUDA, so on a
V100 every model that builds a rotary embedding (Llama, Qwen2, Mistral, Gemma,
DeepSeek, ...) and the model runner itself fail to import. The series falls
back to the PyTorch rotary vLLM already uses on other platforms.

Each check runs in a fresh interpreter: which rotary is used is decided when
the module is first imported, under the platform of that moment. The platform
is a CUDA platform of capability 7.0 that touches no GPU.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent

PRELUDE = textwrap.dedent("""
    import sys, types
    sys.path.insert(0, {tests!r})
    sys.modules.setdefault("vllm._C", types.ModuleType("vllm._C"))
    import torch
    import vllm.platforms
    from patches.fakes import fake_cuda
    vllm.platforms._current_platform = fake_cuda(7, 0, "Tesla V100-SXM2-32GB")
    assert vllm.platforms.current_platform.is_cuda()
    import importlib.util
    assert importlib.util.find_spec("vllm.vllm_flash_attn.layers") is None, \\
        "this tree ships vllm_flash_attn.layers: the test needs a tree without it"
""")


def run_on_fake_volta(tree: Path, body: str) -> subprocess.CompletedProcess:
    code = PRELUDE.format(tests=str(HERE.parent)) + textwrap.dedent(body)
    env = dict(os.environ, PYTHONPATH=str(tree), VLLM_TARGET_DEVICE="cuda")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, cwd=str(tree), timeout=300)


def check(proc: subprocess.CompletedProcess) -> None:
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        pytest.fail(f"exit {proc.returncode}: {' '.join(tail)}\n{proc.stderr[-3000:]}")


def test_rotary_embedding_imports_and_matches_reference_on_volta(vllm_tree):
    """The module imports on CUDA 7.0 and both rotary styles give the textbook result."""
    check(run_on_fake_volta(vllm_tree, """
        from vllm.model_executor.layers import rotary_embedding as re
        torch.manual_seed(0)
        tokens, heads, dim = 7, 3, 8
        x = torch.randn(tokens, heads, dim)
        angle = torch.rand(tokens, dim // 2) * 6.0
        cos, sin = angle.cos(), angle.sin()
        for neox in (True, False):
            got = re._apply_rotary_emb(x, cos, sin, neox)
            # Reference: rotate each (a, b) pair by its angle, pairs taken
            # as halves (NeoX) or as neighbours (GPT-J).
            if neox:
                a, b = x[..., :dim // 2], x[..., dim // 2:]
            else:
                a, b = x[..., 0::2], x[..., 1::2]
            c, s = cos[:, None, :], sin[:, None, :]
            ra, rb = a * c - b * s, b * c + a * s
            want = torch.cat((ra, rb), -1) if neox else torch.stack((ra, rb), -1).flatten(-2)
            torch.testing.assert_close(got, want)
        print("ok")
    """))


def test_model_runner_and_llama_import_on_volta(vllm_tree):
    """What failed for every model: the V0 model runner and a rotary model import on CUDA 7.0."""
    check(run_on_fake_volta(vllm_tree, """
        import vllm.worker.model_runner  # noqa: F401
        import vllm.model_executor.models.llama  # noqa: F401
        print("ok")
    """))


def test_vision_rotary_falls_back_on_volta(vllm_tree):
    """Qwen2-VL's vision rotary (also Qwen2.5-VL's and GLM-4.1V's) and Keye's run without flash-attn.

    Both modules import at call time; they are loaded under the stand-in
    platform's name binding, then see CUDA 7.0 when called (importing them
    under a CUDA platform needs the compiled quantization ops)."""
    check(run_on_fake_volta(vllm_tree, """
        volta = vllm.platforms._current_platform
        vllm.platforms._current_platform = None
        from vllm.model_executor.models import keye, qwen2_vl
        qwen2_vl.current_platform = volta
        torch.manual_seed(0)
        t = torch.randn(1, 5, 2, 8)
        freqs = torch.rand(5, 4)
        got = qwen2_vl.apply_rotary_pos_emb_vision(t, freqs)
        want = qwen2_vl.apply_rotary_emb_torch(t, freqs.cos(), freqs.sin())
        torch.testing.assert_close(got, want)
        cos, sin = torch.cat([freqs.cos()] * 2, -1), torch.cat([freqs.sin()] * 2, -1)
        qe, ke = keye.apply_rotary_pos_emb_flashatt(t, t.clone(), cos, sin)
        torch.testing.assert_close(qe, want)
        torch.testing.assert_close(ke, want)
        print("ok")
    """))
