// CPU kmeans_assign_accumulate: the assignment and accumulation half of one Lloyd iteration for a
// batch of independent K-means problems (B images, P points each, K centers, RGB = 3 dims).
// Optional weights (B, P) scale each point's contribution (pixel multiplicities after
// de-duplication; 0 marks padding). Points are split into fixed-size blocks; each block accumulates its own partial sums in double,
// and the partials are added in block order, so results do not depend on the thread count.
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <limits>
#include <vector>

#include "../common.h"

namespace colorizer::cpu {
namespace {

constexpr int64_t kPointsPerBlock = 2048;

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> kmeans_assign_accumulate_cpu(
    const at::Tensor& points, const at::Tensor& centers, const std::optional<at::Tensor>& weights) {
  check_kmeans_args("colorizer::kmeans_assign_accumulate", points, centers, weights);
  const int64_t B = points.size(0), P = points.size(1), K = centers.size(1);
  const at::Tensor pc = points.contiguous(), cc = centers.contiguous();
  const at::Tensor wc = weights.has_value() ? weights->contiguous() : at::Tensor();
  const float* WT = wc.defined() ? wc.data_ptr<float>() : nullptr;
  at::Tensor labels = at::empty({B, P}, points.options().dtype(at::kLong));
  at::Tensor sums = at::empty({B, K, 3}, points.options());
  at::Tensor counts = at::empty({B, K}, points.options());
  at::Tensor sse = at::empty({B}, points.options());

  const int64_t blocks_per_batch = (P + kPointsPerBlock - 1) / kPointsPerBlock;
  const int64_t n_blocks = B * blocks_per_batch;
  // Per block: K * 3 sums, K counts, 1 sse.
  const int64_t stride = K * 4 + 1;
  std::vector<double> partial(n_blocks * stride, 0.0);
  const float* PT = pc.data_ptr<float>();
  const float* CT = cc.data_ptr<float>();
  int64_t* LB = labels.data_ptr<int64_t>();

  at::parallel_for(0, n_blocks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t blk = begin; blk < end; ++blk) {
      const int64_t b = blk / blocks_per_batch;
      const int64_t p0 = (blk % blocks_per_batch) * kPointsPerBlock;
      const int64_t p1 = std::min(P, p0 + kPointsPerBlock);
      const float* ctr = CT + b * K * 3;
      double* acc = partial.data() + blk * stride;
      double* acc_sum = acc;
      double* acc_count = acc + K * 3;
      double* acc_sse = acc + K * 4;
      for (int64_t p = p0; p < p1; ++p) {
        const float* pt = PT + (b * P + p) * 3;
        const float x = pt[0], y = pt[1], z = pt[2];
        // Squared distance in the order (dx^2 + dy^2) + dz^2, strict '<' so ties go to the lowest index.
        float best = std::numeric_limits<float>::infinity();
        int64_t arg = 0;
        for (int64_t k = 0; k < K; ++k) {
          const float dx = x - ctr[k * 3], dy = y - ctr[k * 3 + 1], dz = z - ctr[k * 3 + 2];
          const float d = dx * dx + dy * dy + dz * dz;
          if (d < best) {
            best = d;
            arg = k;
          }
        }
        LB[b * P + p] = arg;
        const double w = WT != nullptr ? WT[b * P + p] : 1.0;
        acc_sum[arg * 3] += w * x;
        acc_sum[arg * 3 + 1] += w * y;
        acc_sum[arg * 3 + 2] += w * z;
        acc_count[arg] += w;
        *acc_sse += w * best;
      }
    }
  });

  float* S = sums.data_ptr<float>();
  float* CNT = counts.data_ptr<float>();
  float* SSE = sse.data_ptr<float>();
  for (int64_t b = 0; b < B; ++b) {
    std::vector<double> total(stride, 0.0);
    for (int64_t j = 0; j < blocks_per_batch; ++j) {
      const double* acc = partial.data() + (b * blocks_per_batch + j) * stride;
      for (int64_t i = 0; i < stride; ++i) total[i] += acc[i];
    }
    for (int64_t i = 0; i < K * 3; ++i) S[b * K * 3 + i] = static_cast<float>(total[i]);
    for (int64_t k = 0; k < K; ++k) CNT[b * K + k] = static_cast<float>(total[K * 3 + k]);
    SSE[b] = static_cast<float>(total[K * 4]);
  }
  return {labels, sums, counts, sse};
}

}  // namespace
}  // namespace colorizer::cpu

TORCH_LIBRARY_IMPL(colorizer, CPU, m) {
  m.impl("kmeans_assign_accumulate", &colorizer::cpu::kmeans_assign_accumulate_cpu);
}
