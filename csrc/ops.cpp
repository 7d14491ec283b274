// Schemas of the colorizer native ops: one TORCH_LIBRARY for the namespace ``colorizer``.
// Implementations register per backend in cpu/*.cpp (TORCH_LIBRARY_IMPL CPU) and cuda/*.cu
// (TORCH_LIBRARY_IMPL CUDA); autograd formulas and fake (meta) kernels are registered from Python
// in colorizer/native.py. This file also holds the Python module init of ``colorizer._C``, which
// only exposes how the library was built: importing it registers the ops.
#include <Python.h>
#include <torch/library.h>

TORCH_LIBRARY(colorizer, m) {
  // act(GroupNorm(x) + residual) + noise_weight[c] * noise; also returns the fp32 per-(N, G) mean
  // and 1/sqrt(var + eps) for the backward. act: "none" | "relu" | "leaky_relu" (slope 0.2).
  m.def(
      "group_norm_act(Tensor x, Tensor weight, Tensor bias, int groups, float eps, str act, "
      "Tensor? residual=None, Tensor? noise_weight=None, Tensor? noise=None) -> (Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // Returns (grad_x, grad_weight, grad_bias, grad_z, grad_noise_weight). grad_z, the gradient of the
  // pre-activation sum (= the residual's gradient), has shape (0,) when act is "none" (it is
  // grad_out then); grad_noise_weight has shape (0,) when there is no noise.
  m.def(
      "group_norm_act_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor bias, Tensor mean, "
      "Tensor rstd, int groups, str act, Tensor? residual=None, Tensor? noise_weight=None, "
      "Tensor? noise=None) -> (Tensor, Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
  // x + weight[c] * noise, noise (N, 1, *spatial) shared by all channels.
  m.def("noise_inject(Tensor x, Tensor weight, Tensor noise) -> Tensor", {at::Tag::pt2_compliant_tag});
  // Gradient of noise_inject with respect to weight: sum over (N, *spatial) of grad_out * noise.
  m.def("noise_inject_backward(Tensor grad_out, Tensor weight, Tensor noise) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // (w - mean) / (unbiased std + eps) per output channel; also returns the fp32 mean and std.
  m.def("weight_standardize(Tensor w, float eps) -> (Tensor, Tensor, Tensor)", {at::Tag::pt2_compliant_tag});
  m.def("weight_standardize_backward(Tensor grad_out, Tensor w, Tensor mean, Tensor std, float eps) -> Tensor",
        {at::Tag::pt2_compliant_tag});
  // One Lloyd step's assignment and accumulation: (labels int64 (B, P), sums f32 (B, K, 3),
  // counts f32 (B, K), sse f32 (B,)); optional float32 weights (B, P) multiply each point's
  // contribution to sums, counts and sse (pixel multiplicities; 0 marks padding).
  m.def(
      "kmeans_assign_accumulate(Tensor points, Tensor centers, Tensor? weights=None) -> "
      "(Tensor, Tensor, Tensor, Tensor)",
      {at::Tag::pt2_compliant_tag});
}

#ifndef COLORIZER_CPU_CAPABILITY
#define COLORIZER_CPU_CAPABILITY "default"
#endif

extern "C" {
// ``import colorizer._C`` loads this shared library (and so runs the registrations above).
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", "colorizer native ops (torch.ops.colorizer)",
                                          -1, nullptr};
  PyObject* module = PyModule_Create(&module_def);
  if (module == nullptr) return nullptr;
#ifdef COLORIZER_WITH_CUDA
  const long with_cuda = 1;
#else
  const long with_cuda = 0;
#endif
  if (PyModule_AddIntConstant(module, "WITH_CUDA", with_cuda) < 0 ||
      PyModule_AddStringConstant(module, "CPU_CAPABILITY", COLORIZER_CPU_CAPABILITY) < 0) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}
