// CPU group_norm_act: GroupNorm + optional residual + activation + optional noise epilogue, and its
// backward. Two passes over each group:
//   forward:  (1) per-(n, c) row moments -> per-(n, g) mean/rstd, (2) normalize + epilogue;
//   backward: (1) per-row gradient sums (writing dz = grad of the pre-activation sum when there is
//             an activation), (2) grad_x from dz and x.
// With at least as many (n, g) groups as threads, each task runs both passes over its groups, so
// pass 2 reads a group from cache (at 512x512 a 2-channel group is 2 MB). With fewer groups, rows
// (n, c) are the parallel unit and a group's channels spread over threads. Every reduction is per
// row in one thread, then combined in a fixed order: results do not depend on the thread count. Statistics are fp32 in registers and double across blocks; storage is float32 or
// bfloat16. Channels_last inputs run a forward kernel of their own (vectors along C); their
// backward computes on an NCHW copy and converts the gradients back.
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

template <Act A>
inline FVec activate(const FVec& z) {
  if constexpr (A == Act::kRelu) {
    return at::vec::maximum(z, FVec(0.f));  // NaN-propagating, as torch.relu
  } else if constexpr (A == Act::kLeakyRelu) {
    return FVec::blendv(z * FVec(kLeakySlope), z, z > FVec(0.f));
  } else {
    return z;
  }
}

template <Act A>
inline float activate(float z) {
  if constexpr (A == Act::kRelu) {
    return std::isnan(z) ? z : std::max(z, 0.f);
  } else if constexpr (A == Act::kLeakyRelu) {
    return z > 0.f ? z : z * kLeakySlope;
  } else {
    return z;
  }
}

// d act(z) / dz * g, with torch's conventions at 0 (relu: 0, leaky_relu: slope).
template <Act A>
inline FVec activate_grad(const FVec& z, const FVec& g) {
  if constexpr (A == Act::kRelu) {
    return FVec::blendv(FVec(0.f), g, z > FVec(0.f));
  } else if constexpr (A == Act::kLeakyRelu) {
    return FVec::blendv(g * FVec(kLeakySlope), g, z > FVec(0.f));
  } else {
    return g;
  }
}

template <Act A>
inline float activate_grad(float z, float g) {
  if constexpr (A == Act::kRelu) {
    return z > 0.f ? g : 0.f;
  } else if constexpr (A == Act::kLeakyRelu) {
    return z > 0.f ? g : g * kLeakySlope;
  } else {
    return g;
  }
}

// Runs body(row_begin, row_end, ng_begin, ng_end) over the (n, c) rows of the tensor, either one
// task per group range (when there are enough groups for the threads: a group is then normalized
// while its rows are still in cache, one read from memory) or, with fewer groups than threads,
// as three phases: rows in parallel, the per-group step serially, rows in parallel again. The
// per-row sums are identical either way, so the results do not depend on the thread count.
template <typename RowSums, typename GroupStep, typename RowApply>
void for_each_group(const GroupNormShape& s, RowSums&& row_sums, GroupStep&& group_step, RowApply&& row_apply) {
  const int64_t groups = s.N * s.G, rows = s.N * s.C;
  if (groups >= at::get_num_threads()) {
    at::parallel_for(0, groups, row_grain(s.D * s.HW), [&](int64_t begin, int64_t end) {
      for (int64_t ng = begin; ng < end; ++ng) {
        for (int64_t r = ng * s.D; r < (ng + 1) * s.D; ++r) row_sums(r);
        group_step(ng);
        for (int64_t r = ng * s.D; r < (ng + 1) * s.D; ++r) row_apply(r);
      }
    });
  } else {
    at::parallel_for(0, rows, row_grain(s.HW), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) row_sums(r);
    });
    for (int64_t ng = 0; ng < groups; ++ng) group_step(ng);
    at::parallel_for(0, rows, row_grain(s.HW), [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) row_apply(r);
    });
  }
}

struct Epilogue {
  const float* weight;        // (C,)
  const float* bias;          // (C,)
  const float* noise_weight;  // (C,) or null
};

// y = act((x - mean) * rstd * w + b + residual) + noise_weight[c] * noise for row r = (n, c).
template <typename T, Act A, bool kRes, bool kNoise>
inline void apply_row(int64_t r, const T* X, const T* R, const T* Z, T* Y, const float* mean, const float* rstd,
                      const Epilogue& e, const GroupNormShape& s) {
  using P = Pack<T>;
  const int64_t HW = s.HW, n_vec = HW - HW % P::kSize;
  const int64_t n = r / s.C, c = r % s.C, ng = n * s.G + c / s.D;
  const float m = mean[ng], a = rstd[ng] * e.weight[c], b = e.bias[c];
  const float nw = kNoise ? e.noise_weight[c] : 0.f;
  const T* x = X + r * HW;
  const T* res = kRes ? R + r * HW : nullptr;
  const T* nz = kNoise ? Z + n * HW : nullptr;
  T* y = Y + r * HW;
  const FVec mv(m), av(a), bv(b), nwv(nw);
  int64_t i = 0;
  for (; i < n_vec; i += P::kSize) {
    FVec v[P::kVecs], rv[P::kVecs], zv[P::kVecs];
    P::load(x + i, v);
    if constexpr (kRes) P::load(res + i, rv);
    if constexpr (kNoise) P::load(nz + i, zv);
    for (int j = 0; j < P::kVecs; ++j) {
      FVec o = at::vec::fmadd(v[j] - mv, av, bv);
      if constexpr (kRes) o = o + rv[j];
      o = activate<A>(o);
      if constexpr (kNoise) o = at::vec::fmadd(zv[j], nwv, o);
      v[j] = o;
    }
    P::store(y + i, v);
  }
  for (; i < HW; ++i) {
    float o = (static_cast<float>(x[i]) - m) * a + b;
    if constexpr (kRes) o += static_cast<float>(res[i]);
    o = activate<A>(o);
    if constexpr (kNoise) o += static_cast<float>(nz[i]) * nw;
    y[i] = static_cast<T>(o);
  }
}

template <typename T, Act A, bool kRes, bool kNoise>
void forward_kernel(const T* X, const T* R, const T* Z, T* Y, float* mean, float* rstd, const Epilogue& e,
                    const GroupNormShape& s, double eps) {
  std::vector<double> s1(s.N * s.C), s2(s.N * s.C);
  const double M = static_cast<double>(s.D * s.HW);
  // Shift each group by its first element (see shifted_moments).
  auto shift_of = [&](int64_t ng) { return static_cast<float>(X[ng * s.D * s.HW]); };
  for_each_group(
      s, [&](int64_t r) { shifted_moments(X + r * s.HW, s.HW, shift_of(r / s.D), s1[r], s2[r]); },
      [&](int64_t ng) {
        double t1 = 0.0, t2 = 0.0;
        for (int64_t r = ng * s.D; r < (ng + 1) * s.D; ++r) {
          t1 += s1[r];
          t2 += s2[r];
        }
        const double m1 = t1 / M;
        const double var = std::max(t2 / M - m1 * m1, 0.0);
        mean[ng] = static_cast<float>(shift_of(ng) + m1);
        rstd[ng] = static_cast<float>(1.0 / std::sqrt(var + eps));
      },
      [&](int64_t r) { apply_row<T, A, kRes, kNoise>(r, X, R, Z, Y, mean, rstd, e, s); });
}

// Channels_last forward: memory (N, HW, C), vectors run along C. Positions are split into fixed
// blocks of kClBlock; each (n, block) task accumulates per-channel shifted sums in fp32 (at most
// kClBlock values each), stored as double partials and combined per (n, g) in a fixed order.
constexpr int64_t kClBlock = 256;

template <typename T, Act A, bool kRes, bool kNoise>
void forward_channels_last(const T* X, const T* R, const T* Z, T* Y, float* mean, float* rstd, const Epilogue& e,
                           const GroupNormShape& s, double eps) {
  using P = Pack<T>;
  const int64_t N = s.N, C = s.C, HW = s.HW, D = s.D, G = s.G;
  const int64_t blocks = (HW + kClBlock - 1) / kClBlock;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, kClBlock * C));
  std::vector<float> shift(N * C);  // the shift of channel c's group: the group's first element
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) shift[n * C + c] = static_cast<float>(X[n * HW * C + (c / D) * D]);
  }
  std::vector<double> part1(N * blocks * C), part2(N * blocks * C);
  at::parallel_for(0, N * blocks, grain, [&](int64_t begin, int64_t end) {
    std::vector<float> a1(C), a2(C);
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, p0 = (task % blocks) * kClBlock, p1 = std::min(HW, p0 + kClBlock);
      std::fill(a1.begin(), a1.end(), 0.f);
      std::fill(a2.begin(), a2.end(), 0.f);
      const float* sh = shift.data() + n * C;
      for (int64_t p = p0; p < p1; ++p) {
        const T* xp = X + (n * HW + p) * C;
        int64_t c = 0;
        for (; c + P::kSize <= C; c += P::kSize) {
          FVec v[P::kVecs];
          P::load(xp + c, v);
          for (int j = 0; j < P::kVecs; ++j) {
            const int64_t cj = c + j * FVec::size();
            const FVec d = v[j] - FVec::loadu(sh + cj);
            (FVec::loadu(a1.data() + cj) + d).store(a1.data() + cj);
            at::vec::fmadd(d, d, FVec::loadu(a2.data() + cj)).store(a2.data() + cj);
          }
        }
        for (; c < C; ++c) {
          const float d = static_cast<float>(xp[c]) - sh[c];
          a1[c] += d;
          a2[c] += d * d;
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        part1[task * C + c] = a1[c];
        part2[task * C + c] = a2[c];
      }
    }
  });
  const double M = static_cast<double>(D * HW);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t g = 0; g < G; ++g) {
      double t1 = 0.0, t2 = 0.0;
      for (int64_t blk = 0; blk < blocks; ++blk) {
        for (int64_t c = g * D; c < (g + 1) * D; ++c) {
          t1 += part1[(n * blocks + blk) * C + c];
          t2 += part2[(n * blocks + blk) * C + c];
        }
      }
      const double m1 = t1 / M;
      const double var = std::max(t2 / M - m1 * m1, 0.0);
      mean[n * G + g] = static_cast<float>(shift[n * C + g * D] + m1);
      rstd[n * G + g] = static_cast<float>(1.0 / std::sqrt(var + eps));
    }
  }
  // Per-(n, c) coefficients, then the epilogue along C at every position.
  std::vector<float> mc(N * C), ac(N * C), bc(N * C), nwc(N * C);
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t c = 0; c < C; ++c) {
      const int64_t ng = n * G + c / D;
      mc[n * C + c] = mean[ng];
      ac[n * C + c] = rstd[ng] * e.weight[c];
      bc[n * C + c] = e.bias[c];
      nwc[n * C + c] = kNoise ? e.noise_weight[c] : 0.f;
    }
  }
  at::parallel_for(0, N * blocks, grain, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / blocks, p0 = (task % blocks) * kClBlock, p1 = std::min(HW, p0 + kClBlock);
      const float* m = mc.data() + n * C;
      const float* a = ac.data() + n * C;
      const float* b = bc.data() + n * C;
      const float* nw = nwc.data() + n * C;
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t off = (n * HW + p) * C;
        const float z = kNoise ? static_cast<float>(Z[n * HW + p]) : 0.f;
        const FVec zv(z);
        int64_t c = 0;
        for (; c + P::kSize <= C; c += P::kSize) {
          FVec v[P::kVecs], rv[P::kVecs];
          P::load(X + off + c, v);
          if constexpr (kRes) P::load(R + off + c, rv);
          for (int j = 0; j < P::kVecs; ++j) {
            const int64_t cj = c + j * FVec::size();
            FVec o = at::vec::fmadd(v[j] - FVec::loadu(m + cj), FVec::loadu(a + cj), FVec::loadu(b + cj));
            if constexpr (kRes) o = o + rv[j];
            o = activate<A>(o);
            if constexpr (kNoise) o = at::vec::fmadd(zv, FVec::loadu(nw + cj), o);
            v[j] = o;
          }
          P::store(Y + off + c, v);
        }
        for (; c < C; ++c) {
          float o = (static_cast<float>(X[off + c]) - m[c]) * a[c] + b[c];
          if constexpr (kRes) o += static_cast<float>(R[off + c]);
          o = activate<A>(o);
          if constexpr (kNoise) o += z * nw[c];
          Y[off + c] = static_cast<T>(o);
        }
      }
    }
  });
}

// Backward pass 1 for row r: dz = act'(z) * g (stored to DZ when there is an activation) and the
// row sums sum(dz), sum(dz * (x - mean)), sum(g * noise).
template <typename T, Act A, bool kRes, bool kNoise>
inline void backward_row_sums(int64_t r, const T* G_, const T* X, const T* R, const T* Z, T* DZ, const float* mean,
                              const float* rstd, const Epilogue& e, const GroupNormShape& s, double* sum_dz,
                              double* sum_dz_xc, double* sum_g_noise) {
  using P = Pack<T>;
  const int64_t HW = s.HW, n_vec = HW - HW % P::kSize;
  const int64_t n = r / s.C, c = r % s.C, ng = n * s.G + c / s.D;
  const float m = mean[ng], a = rstd[ng] * e.weight[c], b = e.bias[c];
  const T* g = G_ + r * HW;
  const T* x = X + r * HW;
  const T* res = kRes ? R + r * HW : nullptr;
  const T* nz = kNoise ? Z + n * HW : nullptr;
  T* dz = A != Act::kNone ? DZ + r * HW : nullptr;
  const FVec mv(m), av(a), bv(b);
  double t_dz = 0.0, t_dzx = 0.0, t_gn = 0.0;
  int64_t i = 0;
  while (i < n_vec) {
    const int64_t block_end = std::min(n_vec, i + kChunk);
    FVec acc_dz(0.f), acc_dzx(0.f), acc_gn(0.f);
    for (; i < block_end; i += P::kSize) {
      FVec gv[P::kVecs], xv[P::kVecs], rv[P::kVecs], zv[P::kVecs];
      P::load(g + i, gv);
      P::load(x + i, xv);
      if constexpr (kRes && A != Act::kNone) P::load(res + i, rv);
      if constexpr (kNoise) P::load(nz + i, zv);
      FVec d[P::kVecs];
      for (int j = 0; j < P::kVecs; ++j) {
        d[j] = gv[j];
        if constexpr (A != Act::kNone) {
          FVec pre = at::vec::fmadd(xv[j] - mv, av, bv);
          if constexpr (kRes) pre = pre + rv[j];
          d[j] = activate_grad<A>(pre, gv[j]);
        }
      }
      if constexpr (A != Act::kNone) {
        // Sum the dz that pass 2 will read back (rounded to T), so the two passes agree exactly
        // (a group of one element must get a zero gradient, not a rounding residue times rstd).
        P::store(dz + i, d);
        P::load(dz + i, d);
      }
      for (int j = 0; j < P::kVecs; ++j) {
        const FVec xc = xv[j] - mv;
        acc_dz = acc_dz + d[j];
        acc_dzx = at::vec::fmadd(d[j], xc, acc_dzx);
        if constexpr (kNoise) acc_gn = at::vec::fmadd(gv[j], zv[j], acc_gn);
      }
    }
    t_dz += hsum(acc_dz);
    t_dzx += hsum(acc_dzx);
    if constexpr (kNoise) t_gn += hsum(acc_gn);
  }
  for (; i < HW; ++i) {
    const float gi = static_cast<float>(g[i]);
    const float xc = static_cast<float>(x[i]) - m;
    float d = gi;
    if constexpr (A != Act::kNone) {
      float pre = xc * a + b;
      if constexpr (kRes) pre += static_cast<float>(res[i]);
      dz[i] = static_cast<T>(activate_grad<A>(pre, gi));
      d = static_cast<float>(dz[i]);
    }
    t_dz += d;
    t_dzx += static_cast<double>(d) * xc;
    if constexpr (kNoise) t_gn += static_cast<double>(gi) * static_cast<float>(nz[i]);
  }
  sum_dz[r] = t_dz;
  sum_dz_xc[r] = t_dzx;
  if constexpr (kNoise) sum_g_noise[r] = t_gn;
}

// Backward pass 2 for row r: grad_x = dz * k_dz[r] + (x - mean) * k_x[r] + k_0[r].
template <typename T>
inline void backward_grad_x_row(int64_t r, const T* DZ, const T* X, T* GX, const float* mean, const float* k_dz,
                                const float* k_x, const float* k_0, const GroupNormShape& s) {
  using P = Pack<T>;
  const int64_t HW = s.HW, n_vec = HW - HW % P::kSize;
  const int64_t ng = (r / s.C) * s.G + (r % s.C) / s.D;
  const float m = mean[ng];
  const T* dz = DZ + r * HW;
  const T* x = X + r * HW;
  T* gx = GX + r * HW;
  const FVec mv(m), kdz(k_dz[r]), kx(k_x[r]), k0(k_0[r]);
  int64_t i = 0;
  for (; i < n_vec; i += P::kSize) {
    FVec dv[P::kVecs], xv[P::kVecs];
    P::load(dz + i, dv);
    P::load(x + i, xv);
    for (int j = 0; j < P::kVecs; ++j) dv[j] = at::vec::fmadd(dv[j], kdz, at::vec::fmadd(xv[j] - mv, kx, k0));
    P::store(gx + i, dv);
  }
  for (; i < HW; ++i) {
    const float v = static_cast<float>(dz[i]) * k_dz[r] + (static_cast<float>(x[i]) - m) * k_x[r] + k_0[r];
    gx[i] = static_cast<T>(v);
  }
}

template <typename T, Act A, bool kRes, bool kNoise>
void backward_kernel(const T* G_, const T* X, const T* R, const T* Z, T* DZ, T* GX, const float* mean,
                     const float* rstd, const Epilogue& e, const GroupNormShape& s, double* sum_dz, double* sum_dz_xc,
                     double* sum_g_noise) {
  std::vector<float> k_dz(s.N * s.C), k_x(s.N * s.C), k_0(s.N * s.C);
  const double M = static_cast<double>(s.D * s.HW);
  // Without an activation dz is grad_out itself.
  const T* DZr = A != Act::kNone ? DZ : G_;
  for_each_group(
      s,
      [&](int64_t r) {
        backward_row_sums<T, A, kRes, kNoise>(r, G_, X, R, Z, DZ, mean, rstd, e, s, sum_dz, sum_dz_xc, sum_g_noise);
      },
      [&](int64_t ng) {
        // grad_x = rstd * (w dz - mean_g(w dz) - xhat * mean_g(w dz xhat)), as per-row coefficients.
        const double rs = rstd[ng];
        double db = 0.0, ds = 0.0;  // sum over the group of w dz and of w dz (x - mean)
        for (int64_t r = ng * s.D; r < (ng + 1) * s.D; ++r) {
          const double wc = e.weight[r % s.C];
          db += wc * sum_dz[r];
          ds += wc * sum_dz_xc[r];
        }
        for (int64_t r = ng * s.D; r < (ng + 1) * s.D; ++r) {
          k_dz[r] = static_cast<float>(rs * e.weight[r % s.C]);
          k_x[r] = static_cast<float>(-rs * rs * rs * ds / M);
          k_0[r] = static_cast<float>(-rs * db / M);
        }
      },
      [&](int64_t r) { backward_grad_x_row<T>(r, DZr, X, GX, mean, k_dz.data(), k_x.data(), k_0.data(), s); });
}

at::Tensor as_float_contiguous(const at::Tensor& t) { return t.to(at::kFloat).contiguous(); }

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_act_cpu(
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias, int64_t groups, double eps,
    c10::string_view act_name, const std::optional<at::Tensor>& residual,
    const std::optional<at::Tensor>& noise_weight, const std::optional<at::Tensor>& noise) {
  const char* op = "colorizer::group_norm_act";
  const GroupNormShape s = check_group_norm_args(op, x, weight, bias, groups, residual, noise_weight, noise);
  check_cpu_dtype(op, x.scalar_type());
  const Act act = parse_act(act_name);
  const at::MemoryFormat fmt = output_format(x);

  // Channels_last inputs run the channels_last kernel in place (no conversion of x or y).
  const bool cl = fmt == at::MemoryFormat::ChannelsLast;
  const at::MemoryFormat layout = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const at::Tensor xc = x.contiguous(layout);
  const at::Tensor rc = residual.has_value() ? residual->contiguous(layout) : at::Tensor();
  const at::Tensor zc = noise.has_value() ? noise->to(x.scalar_type()).contiguous() : at::Tensor();
  const at::Tensor w = as_float_contiguous(weight), b = as_float_contiguous(bias);
  const at::Tensor nw = noise_weight.has_value() ? as_float_contiguous(*noise_weight) : at::Tensor();

  at::Tensor y = at::empty(x.sizes(), x.options().memory_format(layout));
  at::Tensor mean = at::empty({s.N, s.G}, x.options().dtype(at::kFloat));
  at::Tensor rstd = at::empty({s.N, s.G}, x.options().dtype(at::kFloat));
  if (x.numel() == 0) return {y, mean.fill_(NAN), rstd.fill_(NAN)};

  const Epilogue e{w.data_ptr<float>(), b.data_ptr<float>(), nw.defined() ? nw.data_ptr<float>() : nullptr};
  dispatch_float_bf16(x.scalar_type(), op, [&]<typename scalar_t>() {
    const scalar_t* R = rc.defined() ? rc.data_ptr<scalar_t>() : nullptr;
    const scalar_t* Z = zc.defined() ? zc.data_ptr<scalar_t>() : nullptr;
    dispatch_epilogue(act, rc.defined(), zc.defined(), [&]<Act A, bool kRes, bool kNoise>() {
      if (cl) {
        forward_channels_last<scalar_t, A, kRes, kNoise>(xc.data_ptr<scalar_t>(), R, Z, y.data_ptr<scalar_t>(),
                                                         mean.data_ptr<float>(), rstd.data_ptr<float>(), e, s, eps);
      } else {
        forward_kernel<scalar_t, A, kRes, kNoise>(xc.data_ptr<scalar_t>(), R, Z, y.data_ptr<scalar_t>(),
                                                  mean.data_ptr<float>(), rstd.data_ptr<float>(), e, s, eps);
      }
    });
  });
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> group_norm_act_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
    const at::Tensor& mean, const at::Tensor& rstd, int64_t groups, c10::string_view act_name,
    const std::optional<at::Tensor>& residual, const std::optional<at::Tensor>& noise_weight,
    const std::optional<at::Tensor>& noise) {
  const char* op = "colorizer::group_norm_act_backward";
  const GroupNormShape s = check_group_norm_args(op, x, weight, bias, groups, residual, noise_weight, noise);
  check_cpu_dtype(op, x.scalar_type());
  TORCH_CHECK(grad_out.sizes() == x.sizes() && grad_out.scalar_type() == x.scalar_type(), op,
              ": grad_out must match x in shape and dtype");
  TORCH_CHECK(mean.numel() == s.N * s.G && rstd.numel() == s.N * s.G && mean.scalar_type() == at::kFloat &&
                  rstd.scalar_type() == at::kFloat,
              op, ": mean and rstd must be float32 (N, groups)");
  const Act act = parse_act(act_name);
  const at::MemoryFormat fmt = output_format(x);
  const bool has_noise = noise.has_value();

  const at::Tensor gc = grad_out.contiguous(), xc = x.contiguous();
  const at::Tensor rc = residual.has_value() && act != Act::kNone ? residual->contiguous() : at::Tensor();
  const at::Tensor zc = has_noise ? noise->to(x.scalar_type()).contiguous() : at::Tensor();
  const at::Tensor w = as_float_contiguous(weight), b = as_float_contiguous(bias);
  const at::Tensor nw = has_noise ? as_float_contiguous(*noise_weight) : at::Tensor();
  const at::Tensor mc = mean.contiguous(), rsc = rstd.contiguous();

  at::Tensor grad_x = at::empty(x.sizes(), x.options());
  at::Tensor grad_z = act != Act::kNone ? at::empty(x.sizes(), x.options()) : at::empty({0}, x.options());
  std::vector<double> sum_dz(s.N * s.C, 0.0), sum_dz_xc(s.N * s.C, 0.0), sum_g_noise(s.N * s.C, 0.0);
  const Epilogue e{w.data_ptr<float>(), b.data_ptr<float>(), has_noise ? nw.data_ptr<float>() : nullptr};
  const float* M_ = mc.data_ptr<float>();
  const float* RS = rsc.data_ptr<float>();

  if (x.numel() > 0) {
    dispatch_float_bf16(x.scalar_type(), op, [&]<typename scalar_t>() {
      const scalar_t* Z = has_noise ? zc.data_ptr<scalar_t>() : nullptr;
      const scalar_t* R = rc.defined() ? rc.data_ptr<scalar_t>() : nullptr;
      scalar_t* DZ = act != Act::kNone ? grad_z.data_ptr<scalar_t>() : nullptr;
      dispatch_epilogue(act, rc.defined(), has_noise, [&]<Act A, bool kRes, bool kNoise>() {
        backward_kernel<scalar_t, A, kRes, kNoise>(gc.data_ptr<scalar_t>(), xc.data_ptr<scalar_t>(), R, Z, DZ,
                                                   grad_x.data_ptr<scalar_t>(), M_, RS, e, s, sum_dz.data(),
                                                   sum_dz_xc.data(), sum_g_noise.data());
      });
    });
  }

  // Parameter gradients: per-channel sums over n of the row sums, in double, in a fixed order.
  at::Tensor gw = at::empty({s.C}, x.options().dtype(at::kDouble));
  at::Tensor gb = at::empty({s.C}, x.options().dtype(at::kDouble));
  at::Tensor gnw = at::empty({has_noise ? s.C : 0}, x.options().dtype(at::kDouble));
  double* GW = gw.data_ptr<double>();
  double* GB = gb.data_ptr<double>();
  for (int64_t c = 0; c < s.C; ++c) {
    double tw = 0.0, tb = 0.0, tn = 0.0;
    for (int64_t n = 0; n < s.N; ++n) {
      const int64_t r = n * s.C + c;
      tw += sum_dz_xc[r] * RS[n * s.G + c / s.D];
      tb += sum_dz[r];
      tn += sum_g_noise[r];
    }
    GW[c] = tw;
    GB[c] = tb;
    if (has_noise) gnw.data_ptr<double>()[c] = tn;
  }
  return {fmt == at::MemoryFormat::Contiguous ? grad_x : grad_x.contiguous(fmt), gw.to(weight.scalar_type()),
          gb.to(bias.scalar_type()),
          act != Act::kNone && fmt != at::MemoryFormat::Contiguous ? grad_z.contiguous(fmt) : grad_z,
          gnw.to(has_noise ? noise_weight->scalar_type() : at::kFloat)};
}

}  // namespace
}  // namespace colorizer::cpu

TORCH_LIBRARY_IMPL(colorizer, CPU, m) {
  m.impl("group_norm_act", &colorizer::cpu::group_norm_act_cpu);
  m.impl("group_norm_act_backward", &colorizer::cpu::group_norm_act_backward_cpu);
}
