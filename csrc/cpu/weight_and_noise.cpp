// CPU weight_standardize (forward/backward) and noise_inject (forward, weight gradient).
// weight_standardize: one row per output channel, rows in parallel, each row read twice (moments,
// then write) while it sits in cache. noise_inject: rows (n, c) in parallel, one pass
// (channels_last: positions in parallel, vectors along C).
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../common.h"
#include "vec_utils.h"

namespace colorizer::cpu {
namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> weight_standardize_cpu(const at::Tensor& w, double eps) {
  const char* op = "colorizer::weight_standardize";
  TORCH_CHECK(w.dim() >= 1, op, ": w must be (C_out, ...), got ", w.sizes());
  const int64_t rows = w.size(0), K = rows == 0 ? 0 : w.numel() / rows;
  const at::Tensor wc = w.contiguous();
  at::Tensor y = at::empty(w.sizes(), w.options());
  at::Tensor mean = at::empty({rows}, w.options().dtype(at::kFloat));
  at::Tensor stdev = at::empty({rows}, w.options().dtype(at::kFloat));
  if (w.numel() == 0) return {y, mean.fill_(NAN), stdev.fill_(NAN)};
  dispatch_float_bf16(w.scalar_type(), op, [&]<typename T>() {
    using P = Pack<T>;
    const T* W = wc.data_ptr<T>();
    T* Y = y.data_ptr<T>();
    float* MEAN = mean.data_ptr<float>();
    float* STD = stdev.data_ptr<float>();
    const int64_t n_vec = K - K % P::kSize;
    at::parallel_for(0, rows, row_grain(K), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* x = W + r * K;
        T* out = Y + r * K;
        const float shift = static_cast<float>(x[0]);
        double s1 = 0.0, s2 = 0.0;
        shifted_moments(x, K, shift, s1, s2);
        // Unbiased variance; K == 1 gives 0 / 0 = NaN, as torch.std (and the reference) do.
        const double var = std::max(s2 - s1 * s1 / K, 0.0) / static_cast<double>(K - 1);
        const double sd = std::sqrt(var);
        const float m = static_cast<float>(shift + s1 / K);
        const float inv = static_cast<float>(1.0 / (sd + eps));
        MEAN[r] = m;
        STD[r] = static_cast<float>(sd);
        const FVec mv(m), iv(inv);
        int64_t i = 0;
        for (; i < n_vec; i += P::kSize) {
          FVec v[P::kVecs];
          P::load(x + i, v);
          for (int j = 0; j < P::kVecs; ++j) v[j] = (v[j] - mv) * iv;
          P::store(out + i, v);
        }
        for (; i < K; ++i) out[i] = static_cast<T>((static_cast<float>(x[i]) - m) * inv);
      }
    });
  });
  return {y, mean, stdev};
}

// grad_w = (g - mean(g)) / d - sum(g * c) / (d^2 (K - 1) std) * c,  c = w - mean, d = std + eps.
at::Tensor weight_standardize_backward_cpu(const at::Tensor& grad_out, const at::Tensor& w, const at::Tensor& mean,
                                           const at::Tensor& stdev, double eps) {
  const char* op = "colorizer::weight_standardize_backward";
  TORCH_CHECK(grad_out.sizes() == w.sizes() && grad_out.scalar_type() == w.scalar_type(), op,
              ": grad_out must match w in shape and dtype");
  const int64_t rows = w.size(0), K = rows == 0 ? 0 : w.numel() / rows;
  TORCH_CHECK(mean.numel() == rows && stdev.numel() == rows && mean.scalar_type() == at::kFloat &&
                  stdev.scalar_type() == at::kFloat,
              op, ": mean and std must be float32 (C_out,)");
  const at::Tensor gc = grad_out.contiguous(), wc = w.contiguous();
  const at::Tensor mc = mean.contiguous(), sc = stdev.contiguous();
  at::Tensor gw = at::empty(w.sizes(), w.options());
  if (w.numel() == 0) return gw;
  dispatch_float_bf16(w.scalar_type(), op, [&]<typename T>() {
    using P = Pack<T>;
    const T* G = gc.data_ptr<T>();
    const T* W = wc.data_ptr<T>();
    T* GW = gw.data_ptr<T>();
    const float* MEAN = mc.data_ptr<float>();
    const float* STD = sc.data_ptr<float>();
    const int64_t n_vec = K - K % P::kSize;
    at::parallel_for(0, rows, row_grain(K), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* g = G + r * K;
        const T* x = W + r * K;
        T* out = GW + r * K;
        const float m = MEAN[r];
        const FVec mv(m);
        double sg = 0.0, sgc = 0.0;
        int64_t i = 0;
        while (i < n_vec) {
          const int64_t block_end = std::min(n_vec, i + kChunk);
          FVec ag(0.f), agc(0.f);
          for (; i < block_end; i += P::kSize) {
            FVec gv[P::kVecs], xv[P::kVecs];
            P::load(g + i, gv);
            P::load(x + i, xv);
            for (int j = 0; j < P::kVecs; ++j) {
              ag = ag + gv[j];
              agc = at::vec::fmadd(gv[j], xv[j] - mv, agc);
            }
          }
          sg += hsum(ag);
          sgc += hsum(agc);
        }
        for (; i < K; ++i) {
          const double gi = static_cast<float>(g[i]);
          sg += gi;
          sgc += gi * (static_cast<float>(x[i]) - m);
        }
        const double sd = STD[r], d = sd + eps;
        const float inv = static_cast<float>(1.0 / d);
        const float shift = static_cast<float>(sg / K / d);
        const float kc = static_cast<float>(sgc / (d * d * static_cast<double>(K - 1) * sd));
        const FVec invv(inv), shv(shift), kcv(kc);
        i = 0;
        for (; i < n_vec; i += P::kSize) {
          FVec gv[P::kVecs], xv[P::kVecs];
          P::load(g + i, gv);
          P::load(x + i, xv);
          for (int j = 0; j < P::kVecs; ++j) gv[j] = gv[j] * invv - shv - (xv[j] - mv) * kcv;
          P::store(out + i, gv);
        }
        for (; i < K; ++i) {
          out[i] = static_cast<T>(static_cast<float>(g[i]) * inv - shift - (static_cast<float>(x[i]) - m) * kc);
        }
      }
    });
  });
  return gw;
}

at::Tensor noise_inject_cpu(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& noise) {
  const char* op = "colorizer::noise_inject";
  check_noise_inject_args(op, x, weight, noise);
  const at::MemoryFormat fmt = output_format(x);
  const int64_t N = x.size(0), C = x.size(1), HW = N * C == 0 ? 0 : x.numel() / (N * C);
  const at::Tensor xc = x.contiguous(fmt), zc = noise.to(x.scalar_type()).contiguous();
  const at::Tensor wf = weight.to(at::kFloat).contiguous();
  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(fmt));
  if (x.numel() == 0) return y;
  dispatch_float_bf16(x.scalar_type(), op, [&]<typename T>() {
    using P = Pack<T>;
    const T* X = xc.data_ptr<T>();
    const T* Z = zc.data_ptr<T>();
    const float* Wt = wf.data_ptr<float>();
    T* Y = y.data_ptr<T>();
    if (fmt == at::MemoryFormat::ChannelsLast) {
      // Memory (N, HW, C): one noise value per position, vectors along C.
      at::parallel_for(0, N * HW, row_grain(C), [&](int64_t begin, int64_t end) {
        for (int64_t q = begin; q < end; ++q) {
          const T* xr = X + q * C;
          T* yr = Y + q * C;
          const float z = static_cast<float>(Z[q]);
          const FVec zv(z);
          int64_t c = 0;
          for (; c + P::kSize <= C; c += P::kSize) {
            FVec xv[P::kVecs];
            P::load(xr + c, xv);
            for (int j = 0; j < P::kVecs; ++j) xv[j] = at::vec::fmadd(zv, FVec::loadu(Wt + c + j * FVec::size()), xv[j]);
            P::store(yr + c, xv);
          }
          for (; c < C; ++c) yr[c] = static_cast<T>(static_cast<float>(xr[c]) + Wt[c] * z);
        }
      });
      return;
    }
    const int64_t n_vec = HW - HW % P::kSize;
    at::parallel_for(0, N * C, row_grain(HW), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        const T* xr = X + r * HW;
        const T* zr = Z + (r / C) * HW;
        T* yr = Y + r * HW;
        const float w = Wt[r % C];
        const FVec wv(w);
        int64_t i = 0;
        for (; i < n_vec; i += P::kSize) {
          FVec xv[P::kVecs], zv[P::kVecs];
          P::load(xr + i, xv);
          P::load(zr + i, zv);
          for (int j = 0; j < P::kVecs; ++j) xv[j] = at::vec::fmadd(zv[j], wv, xv[j]);
          P::store(yr + i, xv);
        }
        for (; i < HW; ++i) yr[i] = static_cast<T>(static_cast<float>(xr[i]) + w * static_cast<float>(zr[i]));
      }
    });
  });
  return y;
}

// d/d weight[c] of sum(grad_out * (x + weight[c] * noise)) = sum over (n, spatial) of grad_out * noise.
at::Tensor noise_inject_backward_cpu(const at::Tensor& grad_out, const at::Tensor& weight, const at::Tensor& noise) {
  const char* op = "colorizer::noise_inject_backward";
  check_noise_inject_args(op, grad_out, weight, noise);
  const int64_t N = grad_out.size(0), C = grad_out.size(1);
  const int64_t HW = N * C == 0 ? 0 : grad_out.numel() / (N * C);
  const at::Tensor gc = grad_out.contiguous(), zc = noise.to(grad_out.scalar_type()).contiguous();
  std::vector<double> row_sum(N * C, 0.0);
  if (grad_out.numel() > 0) {
    dispatch_float_bf16(grad_out.scalar_type(), op, [&]<typename T>() {
      using P = Pack<T>;
      const T* G = gc.data_ptr<T>();
      const T* Z = zc.data_ptr<T>();
      const int64_t n_vec = HW - HW % P::kSize;
      at::parallel_for(0, N * C, row_grain(HW), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) {
          const T* g = G + r * HW;
          const T* z = Z + (r / C) * HW;
          double total = 0.0;
          int64_t i = 0;
          while (i < n_vec) {
            const int64_t block_end = std::min(n_vec, i + kChunk);
            FVec acc(0.f);
            for (; i < block_end; i += P::kSize) {
              FVec gv[P::kVecs], zv[P::kVecs];
              P::load(g + i, gv);
              P::load(z + i, zv);
              for (int j = 0; j < P::kVecs; ++j) acc = at::vec::fmadd(gv[j], zv[j], acc);
            }
            total += hsum(acc);
          }
          for (; i < HW; ++i) total += static_cast<double>(static_cast<float>(g[i])) * static_cast<float>(z[i]);
          row_sum[r] = total;
        }
      });
    });
  }
  at::Tensor gw = at::empty({C}, weight.options().dtype(at::kDouble));
  double* GW = gw.data_ptr<double>();
  for (int64_t c = 0; c < C; ++c) {
    double t = 0.0;
    for (int64_t n = 0; n < N; ++n) t += row_sum[n * C + c];
    GW[c] = t;
  }
  return gw.to(weight.scalar_type());
}

}  // namespace
}  // namespace colorizer::cpu

TORCH_LIBRARY_IMPL(colorizer, CPU, m) {
  m.impl("weight_standardize", &colorizer::cpu::weight_standardize_cpu);
  m.impl("weight_standardize_backward", &colorizer::cpu::weight_standardize_backward_cpu);
  m.impl("noise_inject", &colorizer::cpu::noise_inject_cpu);
  m.impl("noise_inject_backward", &colorizer::cpu::noise_inject_backward_cpu);
}
