// Shared by the CUDA implementations in csrc/cuda/ (one file per op, as csrc/cpu/): includes, launch
// constants, the storage-dtype dispatch, activations and the deterministic block reduction.
//
// Conventions of every CUDA op here (same contracts as csrc/cpu/): storage float32, float16 or
// bfloat16; arithmetic in fp32; cross-block sums in double through per-block partial buffers added
// in a fixed order (no atomics), so results are deterministic. Tensors are made contiguous (NCHW)
// first; channels_last outputs are converted back.
#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "../common.h"

namespace colorizer::cuda {

constexpr int kThreads = 256;
// Elements of a row handled by one block in the elementwise passes and in one reduction split.
constexpr int64_t kRowChunk = 4096;

template <typename F>
void dispatch_storage(at::ScalarType t, const char* op, F&& f) {
  switch (t) {
    case at::kFloat:
      f.template operator()<float>();
      break;
    case at::kHalf:
      f.template operator()<c10::Half>();
      break;
    case at::kBFloat16:
      f.template operator()<c10::BFloat16>();
      break;
    default:
      TORCH_CHECK(false, op, ": the CUDA kernel supports float32, float16 and bfloat16, got ", t);
  }
}

template <Act A>
__device__ __forceinline__ float activate(float z) {
  if constexpr (A == Act::kRelu) {
    return isnan(z) ? z : fmaxf(z, 0.f);
  } else if constexpr (A == Act::kLeakyRelu) {
    return z > 0.f ? z : z * kLeakySlope;
  } else {
    return z;
  }
}

template <Act A>
__device__ __forceinline__ float activate_grad(float z, float g) {
  if constexpr (A == Act::kRelu) {
    return z > 0.f ? g : 0.f;
  } else if constexpr (A == Act::kLeakyRelu) {
    return z > 0.f ? g : g * kLeakySlope;
  } else {
    return g;
  }
}

// Sum of v over the block (blockDim.x == kThreads); the result is valid in thread 0.
template <int kValues>
__device__ __forceinline__ void block_sum(double (&v)[kValues]) {
  __shared__ double shared[kValues][kThreads / 32];
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
#pragma unroll
  for (int j = 0; j < kValues; ++j) {
    for (int offset = 16; offset > 0; offset /= 2) v[j] += __shfl_down_sync(0xffffffff, v[j], offset);
    if (lane == 0) shared[j][warp] = v[j];
  }
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int j = 0; j < kValues; ++j) {
      v[j] = lane < kThreads / 32 ? shared[j][lane] : 0.0;
      for (int offset = 16; offset > 0; offset /= 2) v[j] += __shfl_down_sync(0xffffffff, v[j], offset);
    }
  }
  __syncthreads();
}

inline int64_t splits_per_row(int64_t hw) { return std::max<int64_t>(1, (hw + kRowChunk - 1) / kRowChunk); }

inline at::Tensor float_contiguous(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

}  // namespace colorizer::cuda
