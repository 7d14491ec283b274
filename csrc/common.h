// Shared declarations of the colorizer native ops: activation codes, argument checks and the
// memory-layout rule. Included by the CPU and the CUDA translation units; no kernels here.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/string_view.h>

#include <optional>
#include <tuple>
#include <type_traits>

namespace colorizer {

// The activation fused into group_norm_act. The schema takes it as a string ("none", "relu",
// "leaky_relu") so the Python signature reads like the reference's ``act=None | "relu" | ...``.
enum class Act { kNone = 0, kRelu = 1, kLeakyRelu = 2 };
constexpr float kLeakySlope = 0.2f;  // colorizer.ops.reference.LEAKY_SLOPE

inline Act parse_act(c10::string_view act) {
  if (act == "none") return Act::kNone;
  if (act == "relu") return Act::kRelu;
  if (act == "leaky_relu") return Act::kLeakyRelu;
  TORCH_CHECK(false, "colorizer::group_norm_act: unknown act '", std::string(act),
              "'; expected none, relu or leaky_relu");
}

// Outputs keep a channels_last input channels_last; everything else comes out contiguous (NCHW).
// The Python fake kernels (colorizer/native.py) apply the same rule so fake and real strides agree.
inline at::MemoryFormat output_format(const at::Tensor& x) {
  if (x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)) {
    return at::MemoryFormat::ChannelsLast;
  }
  return at::MemoryFormat::Contiguous;
}

// Validates the arguments of group_norm_act / its backward; returns (N, C, HW, G, D).
struct GroupNormShape {
  int64_t N, C, HW, G, D;
};

inline GroupNormShape check_group_norm_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                            const at::Tensor& bias, int64_t groups,
                                            const std::optional<at::Tensor>& residual,
                                            const std::optional<at::Tensor>& noise_weight,
                                            const std::optional<at::Tensor>& noise) {
  TORCH_CHECK(x.dim() >= 2, op, ": x must be (N, C, *), got ", x.sizes());
  const int64_t N = x.size(0), C = x.size(1);
  TORCH_CHECK(groups > 0 && C % groups == 0, op, ": channels ", C, " not divisible by groups ", groups);
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == C && bias.dim() == 1 && bias.size(0) == C, op,
              ": weight and bias must be (C,) = (", C, ",), got ", weight.sizes(), " and ", bias.sizes());
  if (residual.has_value()) {
    TORCH_CHECK(residual->sizes() == x.sizes(), op, ": residual ", residual->sizes(), " != x ", x.sizes());
    TORCH_CHECK(residual->scalar_type() == x.scalar_type(), op, ": residual dtype ", residual->scalar_type(),
                " != x dtype ", x.scalar_type());
  }
  TORCH_CHECK(noise.has_value() == noise_weight.has_value(), op, ": noise and noise_weight go together");
  if (noise.has_value()) {
    TORCH_CHECK(noise_weight->dim() == 1 && noise_weight->size(0) == C, op, ": noise_weight must be (C,), got ",
                noise_weight->sizes());
    TORCH_CHECK(noise->dim() == x.dim() && noise->size(0) == N && noise->size(1) == 1, op,
                ": noise must be (N, 1, *spatial), got ", noise->sizes(), " for x ", x.sizes());
    for (int64_t d = 2; d < x.dim(); ++d) {
      TORCH_CHECK(noise->size(d) == x.size(d), op, ": noise ", noise->sizes(), " does not match x ", x.sizes());
    }
  }
  const int64_t HW = N * C == 0 ? 0 : x.numel() / (N * C);
  return {N, C, HW, groups, C / groups};
}

inline void check_noise_inject_args(const char* op, const at::Tensor& x, const at::Tensor& weight,
                                    const at::Tensor& noise) {
  TORCH_CHECK(x.dim() >= 2, op, ": x must be (N, C, *), got ", x.sizes());
  TORCH_CHECK(weight.dim() == 1 && weight.size(0) == x.size(1), op, ": weight must be (C,) = (", x.size(1),
              ",), got ", weight.sizes());
  TORCH_CHECK(noise.dim() == x.dim() && noise.size(0) == x.size(0) && noise.size(1) == 1, op,
              ": noise must be (N, 1, *spatial), got ", noise.sizes(), " for x ", x.sizes());
  for (int64_t d = 2; d < x.dim(); ++d) {
    TORCH_CHECK(noise.size(d) == x.size(d), op, ": noise ", noise.sizes(), " does not match x ", x.sizes());
  }
}

inline void check_kmeans_args(const char* op, const at::Tensor& points, const at::Tensor& centers,
                              const std::optional<at::Tensor>& weights) {
  TORCH_CHECK(points.dim() == 3 && points.size(2) == 3, op, ": points must be (B, P, 3), got ", points.sizes());
  TORCH_CHECK(centers.dim() == 3 && centers.size(2) == 3 && centers.size(0) == points.size(0), op,
              ": centers must be (B, K, 3) with B = ", points.size(0), ", got ", centers.sizes());
  TORCH_CHECK(centers.size(1) > 0, op, ": need at least one center");
  TORCH_CHECK(points.scalar_type() == at::kFloat && centers.scalar_type() == at::kFloat, op,
              ": points and centers must be float32, got ", points.scalar_type(), " and ", centers.scalar_type());
  if (weights.has_value()) {
    TORCH_CHECK(weights->dim() == 2 && weights->size(0) == points.size(0) && weights->size(1) == points.size(1) &&
                    weights->scalar_type() == at::kFloat,
                op, ": weights must be float32 (B, P) = (", points.size(0), ", ", points.size(1), "), got ",
                weights->scalar_type(), " ", weights->sizes());
  }
}

// Calls f.template operator()<A, kRes, kNoise>() with the runtime flags as template arguments
// (host code shared by the CPU and CUDA launchers).
template <typename F>
void dispatch_epilogue(Act act, bool has_res, bool has_noise, F&& f) {
  auto with_act = [&](auto a_tag) {
    constexpr Act A = decltype(a_tag)::value;
    if (has_res) {
      has_noise ? f.template operator()<A, true, true>() : f.template operator()<A, true, false>();
    } else {
      has_noise ? f.template operator()<A, false, true>() : f.template operator()<A, false, false>();
    }
  };
  switch (act) {
    case Act::kNone:
      with_act(std::integral_constant<Act, Act::kNone>{});
      break;
    case Act::kRelu:
      with_act(std::integral_constant<Act, Act::kRelu>{});
      break;
    case Act::kLeakyRelu:
      with_act(std::integral_constant<Act, Act::kLeakyRelu>{});
      break;
  }
}

}  // namespace colorizer
