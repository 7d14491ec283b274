// noise_inject and weight_standardize on CUDA, forward and backward (TORCH_LIBRARY_IMPL colorizer,
// CUDA); the contracts of csrc/cpu/weight_and_noise.cpp, the conventions of cuda_utils.cuh.
#include "cuda_utils.cuh"

namespace colorizer::cuda {
namespace {

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

}  // namespace
}  // namespace colorizer::cuda

TORCH_LIBRARY_IMPL(colorizer, CUDA, m) {
  m.impl("noise_inject", &colorizer::cuda::noise_inject_cuda);
  m.impl("noise_inject_backward", &colorizer::cuda::noise_inject_backward_cuda);
  m.impl("weight_standardize", &colorizer::cuda::weight_standardize_cuda);
  m.impl("weight_standardize_backward", &colorizer::cuda::weight_standardize_backward_cuda);
}
