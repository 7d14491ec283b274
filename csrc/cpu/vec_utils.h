// Vector helpers shared by the CPU kernels: a loader that turns float32 or bfloat16 storage into
// Vectorized<float> registers, horizontal sums, and the shifted row moments every norm needs.
// All arithmetic is fp32 in registers; partial sums move to double every kChunk elements so long
// rows (512x512 = 262144 elements) keep fp32-level accuracy without a Welford loop.
#pragma once

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>
#include <c10/core/ScalarType.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <cstdint>

namespace colorizer::cpu {

using FVec = at::vec::Vectorized<float>;

// Pack<T>: kSize elements of T per step, held as kVecs Vectorized<float>.
template <typename T>
struct Pack;

template <>
struct Pack<float> {
  static constexpr int kVecs = 1;
  static constexpr int64_t kSize = FVec::size();
  static inline void load(const float* p, FVec* v) { v[0] = FVec::loadu(p); }
  static inline void store(float* p, const FVec* v) { v[0].store(p); }
};

template <>
struct Pack<c10::BFloat16> {
  using BVec = at::vec::Vectorized<c10::BFloat16>;
  static_assert(BVec::size() == 2 * FVec::size(), "bfloat16 vector must hold two float vectors");
  static constexpr int kVecs = 2;
  static constexpr int64_t kSize = BVec::size();
  static inline void load(const c10::BFloat16* p, FVec* v) {
    auto halves = at::vec::convert_to_float<c10::BFloat16>(BVec::loadu(p));
    v[0] = std::get<0>(halves);
    v[1] = std::get<1>(halves);
  }
  static inline void store(c10::BFloat16* p, const FVec* v) {
    at::vec::convert_from_float<c10::BFloat16>(v[0], v[1]).store(p);
  }
};

// Elements per fp32 accumulation block before the partial sums are folded into double.
constexpr int64_t kChunk = 4096;

inline double hsum(const FVec& v) {
  alignas(64) float lanes[FVec::size()];
  v.store(lanes);
  double s = 0.0;
  for (int64_t i = 0; i < FVec::size(); ++i) s += lanes[i];
  return s;
}

// Sums of (p[i] - shift) and (p[i] - shift)^2 over n elements, in double. Shifting by a value
// near the mean (the first element of the group) avoids the cancellation of E[x^2] - E[x]^2.
template <typename T>
inline void shifted_moments(const T* p, int64_t n, float shift, double& s1, double& s2) {
  using P = Pack<T>;
  const FVec k(shift);
  double d1 = 0.0, d2 = 0.0;
  int64_t i = 0;
  const int64_t n_vec = n - n % P::kSize;
  while (i < n_vec) {
    const int64_t end = std::min(n_vec, i + kChunk);
    FVec a1(0.f), a2(0.f);
    for (; i < end; i += P::kSize) {
      FVec v[P::kVecs];
      P::load(p + i, v);
      for (int j = 0; j < P::kVecs; ++j) {
        const FVec d = v[j] - k;
        a1 = a1 + d;
        a2 = at::vec::fmadd(d, d, a2);
      }
    }
    d1 += hsum(a1);
    d2 += hsum(a2);
  }
  for (; i < n; ++i) {
    const double d = static_cast<double>(static_cast<float>(p[i])) - shift;
    d1 += d;
    d2 += d * d;
  }
  s1 = d1;
  s2 = d2;
}

// Rows per parallel task so that one task touches at least ~32K elements (below that the OpenMP
// fork costs more than the work).
inline void check_cpu_dtype(const char* op, at::ScalarType t) {
  TORCH_CHECK(t == at::kFloat || t == at::kBFloat16, op, ": the CPU kernel supports float32 and bfloat16, got ", t);
}

// Calls f.template operator()<scalar_t>() for float32 or bfloat16 storage (the only CPU dtypes:
// fewer instantiations keep the build short).
template <typename F>
void dispatch_float_bf16(at::ScalarType t, const char* op, F&& f) {
  check_cpu_dtype(op, t);
  if (t == at::kFloat) {
    f.template operator()<float>();
  } else {
    f.template operator()<c10::BFloat16>();
  }
}

inline int64_t row_grain(int64_t row_len) { return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, row_len)); }

}  // namespace colorizer::cpu
