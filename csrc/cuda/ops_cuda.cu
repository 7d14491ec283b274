// CUDA implementations of the colorizer ops (TORCH_LIBRARY_IMPL colorizer, CUDA), same contracts as
// csrc/cpu/. Storage float32, float16 or bfloat16; arithmetic in fp32; cross-block sums in double
// through per-block partial buffers added in a fixed order (no atomics), so results are
// deterministic. Tensors are made contiguous (NCHW) first; channels_last outputs are converted back.
//
// group_norm_act forward:  row_moments (rows x splits blocks) -> group_stats (one thread per (n, g))
//                          -> apply (elementwise, one block per (row, chunk)).
// group_norm_act backward: bwd_row_sums (writes dz) -> bwd_coefficients -> bwd_apply, and
//                          channel_sums for the parameter gradients.
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <torch/library.h>

#include <cmath>

#include "../common.h"

namespace colorizer::cuda {
namespace {

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

int64_t splits_per_row(int64_t hw) { return std::max<int64_t>(1, (hw + kRowChunk - 1) / kRowChunk); }

// ----------------------------------------------------------------------------------------------
// group_norm_act forward
// ----------------------------------------------------------------------------------------------

// Block (row, split): partial sums of (x - shift) and (x - shift)^2 over its slice of the row.
// x: (rows, HW) contiguous; shift: per group, the group's first element; partial: (rows * S, 2).
template <typename T>
__global__ void row_moments_kernel(const T* __restrict__ x, int64_t HW, int64_t D, int64_t S,
                                   double* __restrict__ partial) {
  const int64_t row = blockIdx.x / S, split = blockIdx.x % S;
  const float shift = static_cast<float>(x[(row / D) * D * HW]);
  const int64_t begin = split * kRowChunk, end = min(HW, begin + kRowChunk);
  const T* p = x + row * HW;
  float a1 = 0.f, a2 = 0.f;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const float d = static_cast<float>(p[i]) - shift;
    a1 += d;
    a2 += d * d;
  }
  double v[2] = {a1, a2};
  block_sum<2>(v);
  if (threadIdx.x == 0) {
    partial[blockIdx.x * 2] = v[0];
    partial[blockIdx.x * 2 + 1] = v[1];
  }
}

// One thread per (n, g): combine the partials of its D rows in order into mean and rstd.
template <typename T>
__global__ void group_stats_kernel(const T* __restrict__ x, const double* __restrict__ partial, int64_t NG, int64_t D,
                                   int64_t HW, int64_t S, double eps, float* __restrict__ mean,
                                   float* __restrict__ rstd) {
  const int64_t ng = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (ng >= NG) return;
  double t1 = 0.0, t2 = 0.0;
  for (int64_t b = ng * D * S; b < (ng + 1) * D * S; ++b) {
    t1 += partial[b * 2];
    t2 += partial[b * 2 + 1];
  }
  const double M = static_cast<double>(D * HW);
  const double m1 = t1 / M;
  const double var = fmax(t2 / M - m1 * m1, 0.0);
  mean[ng] = static_cast<float>(static_cast<float>(x[ng * D * HW]) + m1);
  rstd[ng] = static_cast<float>(1.0 / sqrt(var + eps));
}

struct Params {
  const float* weight;
  const float* bias;
  const float* noise_weight;
  int64_t C, HW, G, D, S;
};

template <typename T, Act A, bool kRes, bool kNoise>
__global__ void apply_kernel(const T* __restrict__ x, const T* __restrict__ res, const T* __restrict__ noise,
                             T* __restrict__ y, const float* __restrict__ mean, const float* __restrict__ rstd,
                             Params p) {
  const int64_t row = blockIdx.x / p.S, split = blockIdx.x % p.S;
  const int64_t n = row / p.C, c = row % p.C, ng = n * p.G + c / p.D;
  const float m = mean[ng], a = rstd[ng] * p.weight[c], b = p.bias[c];
  const float nw = kNoise ? p.noise_weight[c] : 0.f;
  const int64_t begin = split * kRowChunk, end = min(p.HW, begin + kRowChunk);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const int64_t idx = row * p.HW + i;
    float o = (static_cast<float>(x[idx]) - m) * a + b;
    if constexpr (kRes) o += static_cast<float>(res[idx]);
    o = activate<A>(o);
    if constexpr (kNoise) o += nw * static_cast<float>(noise[n * p.HW + i]);
    y[idx] = static_cast<T>(o);
  }
}

at::Tensor float_contiguous(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_act_cuda(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t groups, double eps,
    c10::string_view act_name, const std::optional<at::Tensor>& residual,
    const std::optional<at::Tensor>& noise_weight, const std::optional<at::Tensor>& noise) {
  const char* op = "colorizer::group_norm_act";
  const GroupNormShape s = check_group_norm_args(op, x, weight, bias, groups, residual, noise_weight, noise);
  const Act act = parse_act(act_name);
  const at::MemoryFormat fmt = output_format(x);
  c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous();
  const at::Tensor rc = residual.has_value() ? residual->contiguous() : at::Tensor();
  const at::Tensor zc = noise.has_value() ? noise->to(x.scalar_type()).contiguous() : at::Tensor();
  const at::Tensor w = float_contiguous(weight), b = float_contiguous(bias);
  const at::Tensor nw = noise_weight.has_value() ? float_contiguous(*noise_weight) : at::Tensor();
  at::Tensor y = at::empty(x.sizes(), x.options());
  at::Tensor mean = at::empty({s.N, s.G}, x.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({s.N, s.G}, x.options().dtype(at::kFloat));
  if (x.numel() == 0) return {y.contiguous(fmt), mean.fill_(NAN), rstd.fill_(NAN)};

  const int64_t S = splits_per_row(s.HW), rows = s.N * s.C, NG = s.N * s.G;
  at::Tensor partial = at::empty({rows * S, 2}, x.options().dtype(at::kDouble));
  const Params params{w.data_ptr<float>(), b.data_ptr<float>(), nw.defined() ? nw.data_ptr<float>() : nullptr,
                      s.C, s.HW, s.G, s.D, S};
  auto stream = c10::cuda::getCurrentCUDAStream();
  dispatch_storage(x.scalar_type(), op, [&]<typename T>() {
    const T* X = xc.data_ptr<T>();
    row_moments_kernel<T><<<rows * S, kThreads, 0, stream>>>(X, s.HW, s.D, S, partial.data_ptr<double>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    group_stats_kernel<T><<<(NG + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
        X, partial.data_ptr<double>(), NG, s.D, s.HW, S, eps, mean.data_ptr<float>(), rstd.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    const T* R = rc.defined() ? rc.data_ptr<T>() : nullptr;
    const T* Z = zc.defined() ? zc.data_ptr<T>() : nullptr;
    dispatch_epilogue(act, rc.defined(), zc.defined(), [&]<Act A, bool kRes, bool kNoise>() {
      apply_kernel<T, A, kRes, kNoise><<<rows * S, kThreads, 0, stream>>>(
          X, R, Z, y.data_ptr<T>(), mean.data_ptr<float>(), rstd.data_ptr<float>(), params);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {fmt == at::MemoryFormat::Contiguous ? y : y.contiguous(fmt), mean, rstd};
}

// ----------------------------------------------------------------------------------------------
// group_norm_act backward
// ----------------------------------------------------------------------------------------------

// Block (row, split): dz = act'(z) * g (stored when there is an activation) and partial sums of
// dz, dz * (x - mean) and g * noise. partial: (rows * S, 3).
template <typename T, Act A, bool kRes, bool kNoise>
__global__ void bwd_row_sums_kernel(const T* __restrict__ g, const T* __restrict__ x, const T* __restrict__ res,
                                    const T* __restrict__ noise, T* __restrict__ dz, const float* __restrict__ mean,
                                    const float* __restrict__ rstd, Params p, double* __restrict__ partial) {
  const int64_t row = blockIdx.x / p.S, split = blockIdx.x % p.S;
  const int64_t n = row / p.C, c = row % p.C, ng = n * p.G + c / p.D;
  const float m = mean[ng], a = rstd[ng] * p.weight[c], b = p.bias[c];
  const int64_t begin = split * kRowChunk, end = min(p.HW, begin + kRowChunk);
  float s_dz = 0.f, s_dzx = 0.f, s_gn = 0.f;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const int64_t idx = row * p.HW + i;
    const float gi = static_cast<float>(g[idx]);
    const float xc = static_cast<float>(x[idx]) - m;
    float d = gi;
    if constexpr (A != Act::kNone) {
      float pre = xc * a + b;
      if constexpr (kRes) pre += static_cast<float>(res[idx]);
      // Sum the dz that bwd_apply reads back (rounded to T), so the two passes agree exactly.
      const T stored = static_cast<T>(activate_grad<A>(pre, gi));
      dz[idx] = stored;
      d = static_cast<float>(stored);
    }
    s_dz += d;
    s_dzx += d * xc;
    if constexpr (kNoise) s_gn += gi * static_cast<float>(noise[n * p.HW + i]);
  }
  double v[3] = {s_dz, s_dzx, s_gn};
  block_sum<3>(v);
  if (threadIdx.x == 0) {
    partial[blockIdx.x * 3] = v[0];
    partial[blockIdx.x * 3 + 1] = v[1];
    partial[blockIdx.x * 3 + 2] = v[2];
  }
}

// One thread per (n, g): row totals (row_sums (rows, 3)) and the grad_x coefficients of its rows:
// grad_x = dz * k[r, 0] + (x - mean) * k[r, 1] + k[r, 2].
__global__ void bwd_coefficients_kernel(const double* __restrict__ partial, const float* __restrict__ rstd,
                                        Params p, int64_t NG, double* __restrict__ row_sums,
                                        float* __restrict__ coef) {
  const int64_t ng = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (ng >= NG) return;
  const double rs = rstd[ng], M = static_cast<double>(p.D * p.HW);
  double db = 0.0, ds = 0.0;
  for (int64_t r = ng * p.D; r < (ng + 1) * p.D; ++r) {
    double t[3] = {0.0, 0.0, 0.0};
    for (int64_t b = r * p.S; b < (r + 1) * p.S; ++b) {
      for (int j = 0; j < 3; ++j) t[j] += partial[b * 3 + j];
    }
    for (int j = 0; j < 3; ++j) row_sums[r * 3 + j] = t[j];
    const double wc = p.weight[r % p.C];
    db += wc * t[0];
    ds += wc * t[1];
  }
  for (int64_t r = ng * p.D; r < (ng + 1) * p.D; ++r) {
    coef[r * 3] = static_cast<float>(rs * p.weight[r % p.C]);
    coef[r * 3 + 1] = static_cast<float>(-rs * rs * rs * ds / M);
    coef[r * 3 + 2] = static_cast<float>(-rs * db / M);
  }
}

template <typename T>
__global__ void bwd_apply_kernel(const T* __restrict__ dz, const T* __restrict__ x, T* __restrict__ gx,
                                 const float* __restrict__ mean, const float* __restrict__ coef, Params p) {
  const int64_t row = blockIdx.x / p.S, split = blockIdx.x % p.S;
  const int64_t ng = (row / p.C) * p.G + (row % p.C) / p.D;
  const float m = mean[ng], k_dz = coef[row * 3], k_x = coef[row * 3 + 1], k_0 = coef[row * 3 + 2];
  const int64_t begin = split * kRowChunk, end = min(p.HW, begin + kRowChunk);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const int64_t idx = row * p.HW + i;
    gx[idx] = static_cast<T>(static_cast<float>(dz[idx]) * k_dz + (static_cast<float>(x[idx]) - m) * k_x + k_0);
  }
}

// One thread per channel: out[c] = sum over n of row_sums[n * C + c, col] (* rstd[n, g] if scaled).
__global__ void channel_sums_kernel(const double* __restrict__ row_sums, const float* __restrict__ rstd, int64_t N,
                                    int64_t C, int64_t G, int64_t D, int col, bool scale_by_rstd,
                                    float* __restrict__ out) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double t = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    const double v = row_sums[(n * C + c) * 3 + col];
    t += scale_by_rstd ? v * rstd[n * G + c / D] : v;
  }
  out[c] = static_cast<float>(t);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> group_norm_act_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& mean, const at::Tensor& rstd, int64_t groups, c10::string_view act_name,
    const std::optional<at::Tensor>& residual, const std::optional<at::Tensor>& noise_weight,
    const std::optional<at::Tensor>& noise) {
  const char* op = "colorizer::group_norm_act_backward";
  const GroupNormShape s = check_group_norm_args(op, x, weight, bias, groups, residual, noise_weight, noise);
  TORCH_CHECK(grad_out.sizes() == x.sizes() && grad_out.scalar_type() == x.scalar_type(), op,
              ": grad_out must match x in shape and dtype");
  TORCH_CHECK(mean.numel() == s.N * s.G && rstd.numel() == s.N * s.G && mean.scalar_type() == at::kFloat &&
                  rstd.scalar_type() == at::kFloat,
              op, ": mean and rstd must be float32 (N, groups)");
  const Act act = parse_act(act_name);
  const at::MemoryFormat fmt = output_format(x);
  const bool has_noise = noise.has_value();
  c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor gc = grad_out.contiguous(), xc = x.contiguous();
  const at::Tensor rc = residual.has_value() && act != Act::kNone ? residual->contiguous() : at::Tensor();
  const at::Tensor zc = has_noise ? noise->to(x.scalar_type()).contiguous() : at::Tensor();
  const at::Tensor w = float_contiguous(weight), b = float_contiguous(bias);
  const at::Tensor nw = has_noise ? float_contiguous(*noise_weight) : at::Tensor();
  const at::Tensor mc = mean.contiguous(), rsc = rstd.contiguous();

  const int64_t S = splits_per_row(s.HW), rows = s.N * s.C, NG = s.N * s.G;
  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  at::Tensor grad_z = act != Act::kNone ? at::empty(x.sizes(), x.options()) : at::empty({0}, x.options());
  at::Tensor gw = at::zeros({s.C}, x.options().dtype(at::kFloat));
  at::Tensor gb = at::zeros({s.C}, x.options().dtype(at::kFloat));
  at::Tensor gnw = at::zeros({has_noise ? s.C : 0}, x.options().dtype(at::kFloat));
  if (x.numel() > 0) {
    at::Tensor partial = at::empty({rows * S, 3}, x.options().dtype(at::kDouble));
    at::Tensor row_sums = at::empty({rows, 3}, x.options().dtype(at::kDouble));
    at::Tensor coef = at::empty({rows, 3}, x.options().dtype(at::kFloat));
    const Params params{w.data_ptr<float>(), b.data_ptr<float>(), has_noise ? nw.data_ptr<float>() : nullptr,
                        s.C, s.HW, s.G, s.D, S};
    auto stream = c10::cuda::getCurrentCUDAStream();
    dispatch_storage(x.scalar_type(), op, [&]<typename T>() {
      const T* Z = has_noise ? zc.data_ptr<T>() : nullptr;
      const T* R = rc.defined() ? rc.data_ptr<T>() : nullptr;
      T* DZ = act != Act::kNone ? grad_z.data_ptr<T>() : nullptr;
      dispatch_epilogue(act, rc.defined(), has_noise, [&]<Act A, bool kRes, bool kNoise>() {
        bwd_row_sums_kernel<T, A, kRes, kNoise><<<rows * S, kThreads, 0, stream>>>(
            gc.data_ptr<T>(), xc.data_ptr<T>(), R, Z, DZ, mc.data_ptr<float>(), rsc.data_ptr<float>(), params,
            partial.data_ptr<double>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
      bwd_coefficients_kernel<<<(NG + kThreads - 1) / kThreads, kThreads, 0, stream>>>(
          partial.data_ptr<double>(), rsc.data_ptr<float>(), params, NG, row_sums.data_ptr<double>(),
          coef.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const T* DZr = act != Act::kNone ? DZ : gc.data_ptr<T>();
      bwd_apply_kernel<T><<<rows * S, kThreads, 0, stream>>>(DZr, xc.data_ptr<T>(), grad_x.data_ptr<T>(),
                                                            mc.data_ptr<float>(), coef.data_ptr<float>(), params);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    const int blocks = static_cast<int>((s.C + kThreads - 1) / kThreads);
    const double* RSUM = row_sums.data_ptr<double>();
    const float* RS = rsc.data_ptr<float>();
    channel_sums_kernel<<<blocks, kThreads, 0, stream>>>(RSUM, RS, s.N, s.C, s.G, s.D, 1, true, gw.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    channel_sums_kernel<<<blocks, kThreads, 0, stream>>>(RSUM, RS, s.N, s.C, s.G, s.D, 0, false, gb.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (has_noise) {
      channel_sums_kernel<<<blocks, kThreads, 0, stream>>>(RSUM, RS, s.N, s.C, s.G, s.D, 2, false,
                                                           gnw.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
  return {fmt == at::MemoryFormat::Contiguous ? grad_x : grad_x.contiguous(fmt), gw.to(weight.scalar_type()),
          gb.to(bias.scalar_type()),
          act != Act::kNone && fmt != at::MemoryFormat::Contiguous ? grad_z.contiguous(fmt) : grad_z,
          gnw.to(has_noise ? noise_weight->scalar_type() : at::kFloat)};
}

// ----------------------------------------------------------------------------------------------
// noise_inject
// ----------------------------------------------------------------------------------------------

template <typename T>
__global__ void noise_inject_kernel(const T* __restrict__ x, const float* __restrict__ w, const T* __restrict__ noise,
                                    T* __restrict__ y, int64_t C, int64_t HW, int64_t S) {
  const int64_t row = blockIdx.x / S, split = blockIdx.x % S;
  const float wc = w[row % C];
  const T* z = noise + (row / C) * HW;
  const int64_t begin = split * kRowChunk, end = min(HW, begin + kRowChunk);
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    const int64_t idx = row * HW + i;
    y[idx] = static_cast<T>(static_cast<float>(x[idx]) + wc * static_cast<float>(z[i]));
  }
}

template <typename T>
__global__ void noise_weight_grad_partial_kernel(const T* __restrict__ g, const T* __restrict__ noise, int64_t C,
                                                 int64_t HW, int64_t S, double* __restrict__ partial) {
  const int64_t row = blockIdx.x / S, split = blockIdx.x % S;
  const T* z = noise + (row / C) * HW;
  const int64_t begin = split * kRowChunk, end = min(HW, begin + kRowChunk);
  float acc = 0.f;
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    acc += static_cast<float>(g[row * HW + i]) * static_cast<float>(z[i]);
  }
  double v[1] = {acc};
  block_sum<1>(v);
  if (threadIdx.x == 0) partial[blockIdx.x] = v[0];
}

__global__ void noise_weight_grad_kernel(const double* __restrict__ partial, int64_t N, int64_t C, int64_t S,
                                         float* __restrict__ out) {
  const int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double t = 0.0;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t s = 0; s < S; ++s) t += partial[(n * C + c) * S + s];
  }
  out[c] = static_cast<float>(t);
}

at::Tensor noise_inject_cuda(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& noise) {
  const char* op = "colorizer::noise_inject";
  check_noise_inject_args(op, x, weight, noise);
  const at::MemoryFormat fmt = output_format(x);
  c10::cuda::CUDAGuard guard(x.device());
  const int64_t N = x.size(0), C = x.size(1), HW = N * C == 0 ? 0 : x.numel() / (N * C);
  const at::Tensor xc = x.contiguous(), zc = noise.to(x.scalar_type()).contiguous();
  const at::Tensor wf = float_contiguous(weight);
  at::Tensor y = at::empty(x.sizes(), x.options());
  if (x.numel() == 0) return y.contiguous(fmt);
  const int64_t S = splits_per_row(HW);
  dispatch_storage(x.scalar_type(), op, [&]<typename T>() {
    noise_inject_kernel<T><<<N * C * S, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        xc.data_ptr<T>(), wf.data_ptr<float>(), zc.data_ptr<T>(), y.data_ptr<T>(), C, HW, S);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return fmt == at::MemoryFormat::Contiguous ? y : y.contiguous(fmt);
}

at::Tensor noise_inject_backward_cuda(const at::Tensor& grad_out, const at::Tensor& weight, const at::Tensor& noise) {
  const char* op = "colorizer::noise_inject_backward";
  check_noise_inject_args(op, grad_out, weight, noise);
  c10::cuda::CUDAGuard guard(grad_out.device());
  const int64_t N = grad_out.size(0), C = grad_out.size(1);
  const int64_t HW = N * C == 0 ? 0 : grad_out.numel() / (N * C);
  at::Tensor gw = at::zeros({C}, grad_out.options().dtype(at::kFloat));
  if (grad_out.numel() > 0) {
    const at::Tensor gc = grad_out.contiguous(), zc = noise.to(grad_out.scalar_type()).contiguous();
    const int64_t S = splits_per_row(HW);
    at::Tensor partial = at::empty({N * C * S}, grad_out.options().dtype(at::kDouble));
    auto stream = c10::cuda::getCurrentCUDAStream();
    dispatch_storage(grad_out.scalar_type(), op, [&]<typename T>() {
      noise_weight_grad_partial_kernel<T><<<N * C * S, kThreads, 0, stream>>>(gc.data_ptr<T>(), zc.data_ptr<T>(), C,
                                                                             HW, S, partial.data_ptr<double>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    noise_weight_grad_kernel<<<(C + kThreads - 1) / kThreads, kThreads, 0, stream>>>(partial.data_ptr<double>(), N,
                                                                                      C, S, gw.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  return gw.to(weight.scalar_type());
}

// ----------------------------------------------------------------------------------------------
// weight_standardize: one block per output channel (a row of K = C_in * kh * kw elements)
// ----------------------------------------------------------------------------------------------

template <typename T>
__global__ void weight_standardize_kernel(const T* __restrict__ w, T* __restrict__ y, float* __restrict__ mean,
                                          float* __restrict__ stdev, int64_t K, double eps) {
  const int64_t row = blockIdx.x;
  const T* p = w + row * K;
  const float shift = static_cast<float>(p[0]);
  float a1 = 0.f, a2 = 0.f;
  for (int64_t i = threadIdx.x; i < K; i += blockDim.x) {
    const float d = static_cast<float>(p[i]) - shift;
    a1 += d;
    a2 += d * d;
  }
  double v[2] = {a1, a2};
  block_sum<2>(v);
  __shared__ float stats[2];
  if (threadIdx.x == 0) {
    // Unbiased variance; K == 1 gives 0 / 0 = NaN, as torch.std does.
    const double var = fmax(v[1] - v[0] * v[0] / K, 0.0) / static_cast<double>(K - 1);
    const double sd = sqrt(var);
    stats[0] = static_cast<float>(shift + v[0] / K);
    stats[1] = static_cast<float>(1.0 / (sd + eps));
    mean[row] = stats[0];
    stdev[row] = static_cast<float>(sd);
  }
  __syncthreads();
  const float m = stats[0], inv = stats[1];
  for (int64_t i = threadIdx.x; i < K; i += blockDim.x) {
    y[row * K + i] = static_cast<T>((static_cast<float>(p[i]) - m) * inv);
  }
}

template <typename T>
__global__ void weight_standardize_backward_kernel(const T* __restrict__ g, const T* __restrict__ w,
                                                   const float* __restrict__ mean, const float* __restrict__ stdev,
                                                   T* __restrict__ gw, int64_t K, double eps) {
  const int64_t row = blockIdx.x;
  const float m = mean[row];
  float a1 = 0.f, a2 = 0.f;
  for (int64_t i = threadIdx.x; i < K; i += blockDim.x) {
    const float gi = static_cast<float>(g[row * K + i]);
    a1 += gi;
    a2 += gi * (static_cast<float>(w[row * K + i]) - m);
  }
  double v[2] = {a1, a2};
  block_sum<2>(v);
  __shared__ float coef[3];
  if (threadIdx.x == 0) {
    const double sd = stdev[row], d = sd + eps;
    coef[0] = static_cast<float>(1.0 / d);
    coef[1] = static_cast<float>(v[0] / K / d);
    coef[2] = static_cast<float>(v[1] / (d * d * static_cast<double>(K - 1) * sd));
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < K; i += blockDim.x) {
    const int64_t idx = row * K + i;
    gw[idx] = static_cast<T>(static_cast<float>(g[idx]) * coef[0] - coef[1] -
                             (static_cast<float>(w[idx]) - m) * coef[2]);
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> weight_standardize_cuda(const at::Tensor& w, double eps) {
  const char* op = "colorizer::weight_standardize";
  TORCH_CHECK(w.dim() >= 1, op, ": w must be (C_out, ...), got ", w.sizes());
  c10::cuda::CUDAGuard guard(w.device());
  const int64_t rows = w.size(0), K = rows == 0 ? 0 : w.numel() / rows;
  const at::Tensor wc = w.contiguous();
  at::Tensor y = at::empty(w.sizes(), w.options());
  at::Tensor mean = at::empty({rows}, w.options().dtype(at::kFloat));
  at::Tensor stdev = at::empty({rows}, w.options().dtype(at::kFloat));
  if (w.numel() == 0) return {y, mean.fill_(NAN), stdev.fill_(NAN)};
  dispatch_storage(w.scalar_type(), op, [&]<typename T>() {
    weight_standardize_kernel<T><<<rows, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        wc.data_ptr<T>(), y.data_ptr<T>(), mean.data_ptr<float>(), stdev.data_ptr<float>(), K, eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {y, mean, stdev};
}

at::Tensor weight_standardize_backward_cuda(const at::Tensor& grad_out, const at::Tensor& w, const at::Tensor& mean,
                                            const at::Tensor& stdev, double eps) {
  const char* op = "colorizer::weight_standardize_backward";
  TORCH_CHECK(grad_out.sizes() == w.sizes() && grad_out.scalar_type() == w.scalar_type(), op,
              ": grad_out must match w in shape and dtype");
  const int64_t rows = w.size(0), K = rows == 0 ? 0 : w.numel() / rows;
  TORCH_CHECK(mean.numel() == rows && stdev.numel() == rows && mean.scalar_type() == at::kFloat &&
                  stdev.scalar_type() == at::kFloat,
              op, ": mean and std must be float32 (C_out,)");
  c10::cuda::CUDAGuard guard(w.device());
  const at::Tensor gc = grad_out.contiguous(), wc = w.contiguous();
  const at::Tensor mc = mean.contiguous(), sc = stdev.contiguous();
  at::Tensor gw = at::empty(w.sizes(), w.options());
  if (w.numel() == 0) return gw;
  dispatch_storage(w.scalar_type(), op, [&]<typename T>() {
    weight_standardize_backward_kernel<T><<<rows, kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        gc.data_ptr<T>(), wc.data_ptr<T>(), mc.data_ptr<float>(), sc.data_ptr<float>(), gw.data_ptr<T>(), K, eps);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return gw;
}

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
  m.impl("group_norm_act", &colorizer::cuda::group_norm_act_cuda);
  m.impl("group_norm_act_backward", &colorizer::cuda::group_norm_act_backward_cuda);
  m.impl("noise_inject", &colorizer::cuda::noise_inject_cuda);
  m.impl("noise_inject_backward", &colorizer::cuda::noise_inject_backward_cuda);
  m.impl("weight_standardize", &colorizer::cuda::weight_standardize_cuda);
  m.impl("weight_standardize_backward", &colorizer::cuda::weight_standardize_backward_cuda);
  m.impl("kmeans_assign_accumulate", &colorizer::cuda::kmeans_assign_accumulate_cuda);
}
