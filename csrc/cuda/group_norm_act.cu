// group_norm_act on CUDA, forward and backward (TORCH_LIBRARY_IMPL colorizer, CUDA); the contract of
// csrc/cpu/group_norm_act.cpp, the conventions of cuda_utils.cuh.
//
// forward:  row_moments (rows x splits blocks) -> group_stats (one thread per (n, g))
//           -> apply (elementwise, one block per (row, chunk)).
// backward: bwd_row_sums (writes dz) -> bwd_coefficients -> bwd_apply, and channel_sums for the
//           parameter gradients.
#include "cuda_utils.cuh"

namespace colorizer::cuda {
namespace {

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

}  // namespace
}  // namespace colorizer::cuda

TORCH_LIBRARY_IMPL(colorizer, CUDA, m) {
  m.impl("group_norm_act", &colorizer::cuda::group_norm_act_cuda);
  m.impl("group_norm_act_backward", &colorizer::cuda::group_norm_act_backward_cuda);
}
