"""Put a vLLM source tree on the Volta path in every Python process.

Only active when VLLM_VOLTA_FORCE_CC is set (tests/engine/drive.py sets it
on a GPU other than a V100, and puts this folder first on PYTHONPATH, so
the engine, its model-inspection subprocess and the API server's engine
process all get it). On a V100 nothing here runs: the installed wheel is
used as it is.

- VLLM_VOLTA_FORCE_CC=7.0: vLLM's CUDA platform reports compute capability
  7.0 (the attention backend, MoE kernel choice, MLA and dtype rules then
  follow the V100 branch); torch SDPA may use its memory-efficient and math
  kernels only (SM 7.0 has no FlashAttention kernel in torch).
- VLLM_VOLTA_OPS_EXT=path: vLLM's CUDA ops built from the tree's csrc/
  (tests/support/vllm_ops) are loaded before vLLM is; ``vllm._C`` and
  ``vllm._moe_C`` become empty stand-in modules (their ops are registered).
- VLLM_VOLTA_PATH_LOG=dir: volta_paths records every Triton launch and
  compiled op into dir/<pid>.json at exit.
"""
import os

if os.environ.get("VLLM_VOLTA_FORCE_CC") or os.environ.get(
        "VLLM_VOLTA_PATH_LOG"):
    import volta_force  # noqa: F401  (this folder)
