"""vllm-volta: a patch series that makes vLLM 0.9.2 work on NVIDIA V100 (SM 7.0)."""
