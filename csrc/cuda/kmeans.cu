// kmeans_assign_accumulate on CUDA (TORCH_LIBRARY_IMPL colorizer, CUDA); the contract of
// csrc/cpu/kmeans.cpp, the conventions of cuda_utils.cuh.
#include "cuda_utils.cuh"

namespace colorizer::cuda {
namespace {

// ----------------------------------------------------------------------------------------------
// kmeans_assign_accumulate: one thread per point; per-block partials (K * 4 + 1 doubles) by block
// reductions, then one thread per (b, value) adds the blocks of its batch row in order.
// ----------------------------------------------------------------------------------------------

constexpr int64_t kPointsPerBlock = kThreads;

__global__ void kmeans_assign_kernel(const float* __restrict__ points, const float* __restrict__ centers,
                                     const float* __restrict__ weights, int64_t P, int64_t K,
                                     int64_t blocks_per_batch, int64_t* __restrict__ labels,
                                     double* __restrict__ partial) {
  const int64_t b = blockIdx.x / blocks_per_batch, blk = blockIdx.x % blocks_per_batch;
  const int64_t p = blk * kPointsPerBlock + threadIdx.x;
  const bool valid = p < P;
  float x = 0.f, y = 0.f, z = 0.f, best = 0.f;
  double w = 0.0;
  int64_t arg = -1;
  if (valid) {
    w = weights != nullptr ? weights[b * P + p] : 1.0;
    const float* pt = points + (b * P + p) * 3;
    x = pt[0];
    y = pt[1];
    z = pt[2];
    best = INFINITY;
    arg = 0;
    const float* ctr = centers + b * K * 3;
    for (int64_t k = 0; k < K; ++k) {
      const float dx = x - ctr[k * 3], dy = y - ctr[k * 3 + 1], dz = z - ctr[k * 3 + 2];
      // __fmul_rn / __fadd_rn: no FMA contraction, the same rounding as the torch oracle.
      const float d = __fadd_rn(__fadd_rn(__fmul_rn(dx, dx), __fmul_rn(dy, dy)), __fmul_rn(dz, dz));
      if (d < best) {
        best = d;
        arg = k;
      }
    }
    labels[b * P + p] = arg;
  }
  const int64_t stride = K * 4 + 1;
  double* out = partial + blockIdx.x * stride;
  for (int64_t k = 0; k < K; ++k) {
    const bool mine = arg == k;
    double v[4] = {mine ? w * x : 0.0, mine ? w * y : 0.0, mine ? w * z : 0.0, mine ? w : 0.0};
    block_sum<4>(v);
    if (threadIdx.x == 0) {
      out[k * 3] = v[0];
      out[k * 3 + 1] = v[1];
      out[k * 3 + 2] = v[2];
      out[K * 3 + k] = v[3];
    }
  }
  double e[1] = {valid ? w * best : 0.0};
  block_sum<1>(e);
  if (threadIdx.x == 0) out[K * 4] = e[0];
}

__global__ void kmeans_reduce_kernel(const double* __restrict__ partial, int64_t B, int64_t K,
                                     int64_t blocks_per_batch, float* __restrict__ sums, float* __restrict__ counts,
                                     float* __restrict__ sse) {
  const int64_t stride = K * 4 + 1;
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= B * stride) return;
  const int64_t b = i / stride, j = i % stride;
  double t = 0.0;
  for (int64_t blk = 0; blk < blocks_per_batch; ++blk) t += partial[(b * blocks_per_batch + blk) * stride + j];
  if (j < K * 3) {
    sums[b * K * 3 + j] = static_cast<float>(t);
  } else if (j < K * 4) {
    counts[b * K + (j - K * 3)] = static_cast<float>(t);
  } else {
    sse[b] = static_cast<float>(t);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_assign_accumulate_cuda(
    const at::Tensor& points, const at::Tensor& centers, const std::optional<at::Tensor>& weights) {
  check_kmeans_args("colorizer::kmeans_assign_accumulate", points, centers, weights);
  c10::cuda::CUDAGuard guard(points.device());
  const int64_t B = points.size(0), P = points.size(1), K = centers.size(1);
  const at::Tensor pc = points.contiguous(), cc = centers.contiguous();
  const at::Tensor wc = weights.has_value() ? weights->contiguous() : at::Tensor();
  at::Tensor labels = at::empty({B, P}, points.options().dtype(at::kLong));
  at::Tensor sums = at::zeros({B, K, 3}, points.options());
  at::Tensor counts = at::zeros({B, K}, points.options());
  at::Tensor sse = at::zeros({B}, points.options());
  if (B == 0 || P == 0) return {labels, sums, counts, sse};
  const int64_t blocks_per_batch = (P + kPointsPerBlock - 1) / kPointsPerBlock;
  const int64_t stride = K * 4 + 1;
  at::Tensor partial = at::empty({B * blocks_per_batch, stride}, points.options().dtype(at::kDouble));
  auto stream = c10::cuda::getCurrentCUDAStream();
  kmeans_assign_kernel<<<B * blocks_per_batch, kThreads, 0, stream>>>(
      pc.data_ptr<float>(), cc.data_ptr<float>(), wc.defined() ? wc.data_ptr<float>() : nullptr, P, K,
      blocks_per_batch, labels.data_ptr<int64_t>(),
      partial.data_ptr<double>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  kmeans_reduce_kernel<<<(B * stride + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
      partial.data_ptr<double>(), B, K, blocks_per_batch, sums.data_ptr<float>(), counts.data_ptr<float>(),
      sse.data_ptr<float>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return {labels, sums, counts, sse};
}

}  // namespace
}  // namespace colorizer::cuda

TORCH_LIBRARY_IMPL(colorizer, CUDA, m) {
  m.impl("kmeans_assign_accumulate", &colorizer::cuda::kmeans_assign_accumulate_cuda);
}
