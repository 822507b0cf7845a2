// activation.cu: elementwise kernels between the GEMMs. SiLU-mul and GELU-tanh-mul read the fused
// gate|up GEMM output ([tokens, 2 * inter]: gate first) and round act(gate) to T before the
// product, as transformers does in T. add_bias adds a per-column bias to row-strided rows (Qwen2's
// QKV bias). logit_softcap caps the f32 logits (Gemma 2's final_logit_softcapping).
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

// PyTorch's tanh approximation (gelu_pytorch_tanh), in its order:
// 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))).
__device__ __forceinline__ float gelu_tanh(float x) {
    const float k_beta = 0.7978845608028654f; // sqrt(2) * (2 / sqrt(pi)) * 0.5
    const float k_kappa = 0.044715f;
    const float inner = k_beta * (x + k_kappa * (x * x * x));
    return 0.5f * x * (1.0f + tanhf(inner));
}

template <typename T>
__device__ void gelu_tanh_mul_impl(T* __restrict__ out, const T* __restrict__ gate_up, int n,
                                   int inter) {
    const size_t total = (size_t)n * inter;
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < total;
         j += (size_t)gridDim.x * blockDim.x) {
        const size_t row = j / inter, col = j % inter;
        const float g = to_f32(gate_up[row * 2 * inter + col]);
        const float u = to_f32(gate_up[row * 2 * inter + inter + col]);
        out[j] = from_f32<T>(round_to<T>(gelu_tanh(g)) * u);
    }
}

#define HALO_GELU(NAME, T)                                                                        \
    extern "C" __global__ void gelu_tanh_mul_##NAME(T* out, const T* gate_up, int n, int inter) {\
        gelu_tanh_mul_impl<T>(out, gate_up, n, inter);                                            \
    }
HALO_FOR_DTYPES(HALO_GELU)

// logits = cap * tanh(logits / cap), over `rows` f32 rows of `vocab` (the logits are always f32).
extern "C" __global__ void logit_softcap(float* logits, int rows, int vocab, float cap) {
    const size_t total = (size_t)rows * vocab;
    for (size_t j = (size_t)blockIdx.x * blockDim.x + threadIdx.x; j < total;
         j += (size_t)gridDim.x * blockDim.x) {
        logits[j] = tanhf(logits[j] / cap) * cap;
    }
}
