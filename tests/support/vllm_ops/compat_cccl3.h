// Compatibility for building vLLM 0.9.2's kernels with CUDA 13 (CCCL 3),
// force-included into every CUDA source of the test extension (build.py).
//
// CCCL 3.0 removed the cub::Sum and cub::Max functors that
// csrc/layernorm_kernels.cu and csrc/moe/topk_softmax_kernels.cu pass to
// cub::BlockReduce; its replacements are cuda::std::plus<> and
// cuda::maximum<>. Nothing else is changed. CUDA 12 (CCCL 2) keeps its own.
#pragma once

#if defined(__CUDACC__)
  #include <cub/version.cuh>
  #if CUB_VERSION >= 300000
    #include <cuda/functional>
    #include <cuda/std/functional>
namespace cub {
using Sum = ::cuda::std::plus<>;
using Max = ::cuda::maximum<>;
}  // namespace cub
  #endif
#endif
