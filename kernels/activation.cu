// activation.cu: elementwise kernels between the GEMMs. SiLU-mul reads the fused gate|up GEMM
// output ([tokens, 2 * inter]: gate first) and rounds silu(gate) to T before the product, as
// transformers does in T. add_bias adds a per-column bias to row-strided rows (Qwen2's QKV bias).
#include "halo_common.cuh"

template <typename T>
__device__ void silu_mul_impl(T* __restrict__ out, const T* __restrict__ gate_up, int n,
                              int inter) {
    const size_t total = (size_t)n * inter;
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < total;
         j += (size_t)gridDim.x * blockDim.x) {
        const size_t row = j / inter, col = j % inter;
        const float g = to_f32(gate_up[row * 2 * inter + col]);
        const float u = to_f32(gate_up[row * 2 * inter + inter + col]);
        const float s = round_to<T>(g / (1.0f + expf(-g)));
        out[j] = from_f32<T>(s * u);
    }
}

#define HALO_SILU(NAME, T)                                                                        \
    extern "C" __global__ void silu_mul_##NAME(T* out, const T* gate_up, int n, int inter) {     \
        silu_mul_impl<T>(out, gate_up, n, inter);                                                 \
    }
HALO_FOR_DTYPES(HALO_SILU)

template <typename T>
__device__ void add_bias_impl(T* __restrict__ x, const T* __restrict__ bias, int n, int cols) {
    const size_t total = (size_t)n * cols;
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < total;
         j += (size_t)gridDim.x * blockDim.x) {
        x[j] = from_f32<T>(to_f32(x[j]) + to_f32(bias[j % cols]));
    }
}

#define HALO_BIAS(NAME, T)                                                                        \
    extern "C" __global__ void add_bias_##NAME(T* x, const T* bias, int n, int cols) {           \
        add_bias_impl<T>(x, bias, n, cols);                                                       \
    }
HALO_FOR_DTYPES(HALO_BIAS)
