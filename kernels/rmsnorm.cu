// rmsnorm.cu: RMSNorm, one block per row, two entry points.
//
// add_rmsnorm: RMSNorm fused with the residual add that precedes it. With `delta` non-null:
// residual += delta (rounded to T, as a framework holding the residual stream in T does), then
// out = (weight + w_offset) * normalize(residual).
//
// rmsnorm_heads: RMSNorm in place over `n_rows` rows of `width` inside each token's row of
// `token_stride` values; the first `n_first` rows use `w_first`, the others `w_second`. This is
// the per-head q/k norm (Qwen3, Gemma 3: rows are the q heads then the k heads of the fused QKV
// buffer) and, with one row per token, the norm Gemma applies to the attention's and the MLP's
// outputs before the residual add.
//
// Rounding follows the two Hugging Face norms: with w_offset == 0 (LlamaRMSNorm, Qwen3RMSNorm)
// the normalized row is rounded to T before the weight multiplies it; with Gemma's (1 + w)
// (w_offset == 1) the product is taken in f32 and rounded once. The sum of squares is a
// fixed-order block reduction in f32.
#include "halo_common.cuh"

template <typename T>
__device__ __forceinline__ float scaled(float x, float inv, float w, float w_offset) {
    if (w_offset == 0.0f) return w * round_to<T>(x * inv);
    return (x * inv) * (w + w_offset);
}

template <typename T>
__device__ void add_rmsnorm_impl(T* __restrict__ residual, const T* __restrict__ delta,
                                 const T* __restrict__ weight, T* __restrict__ out, int hidden,
                                 float eps, float w_offset) {
    __shared__ float scratch[32];
    const size_t base = (size_t)blockIdx.x * hidden;
    T* r = residual + base;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        float x = to_f32(r[i]);
        if (delta != nullptr) {
            x = round_to<T>(x + to_f32(delta[base + i]));
            r[i] = from_f32<T>(x);
        }
        ss += x * x;
    }
    ss = block_sum(ss, scratch);
    const float inv = rsqrtf(ss / (float)hidden + eps);
    // Each thread rereads only the elements it wrote itself, so no barrier is needed.
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) {
        out[base + i] = from_f32<T>(scaled<T>(to_f32(r[i]), inv, to_f32(weight[i]), w_offset));
    }
}

#define HALO_RMSNORM(NAME, T)                                                                     \
    extern "C" __global__ void add_rmsnorm_##NAME(T* residual, const T* delta, const T* weight,  \
                                                  T* out, int hidden, float eps,                  \
                                                  float w_offset) {                               \
        add_rmsnorm_impl<T>(residual, delta, weight, out, hidden, eps, w_offset);                 \
    }
HALO_FOR_DTYPES(HALO_RMSNORM)

// Grid: (tokens, n_rows); block: row_threads(width).
template <typename T>
__device__ void rmsnorm_heads_impl(T* __restrict__ x, const T* __restrict__ w_first,
                                   const T* __restrict__ w_second, int n_first, int width,
                                   int token_stride, float eps, float w_offset) {
    __shared__ float scratch[32];
    const int r = blockIdx.y;
    T* v = x + (size_t)blockIdx.x * token_stride + (size_t)r * width;
    const T* w = r < n_first ? w_first : w_second;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        const float f = to_f32(v[i]);
        ss += f * f;
    }
    ss = block_sum(ss, scratch);
    const float inv = rsqrtf(ss / (float)width + eps);
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        v[i] = from_f32<T>(scaled<T>(to_f32(v[i]), inv, to_f32(w[i]), w_offset));
    }
}

#define HALO_RMSNORM_HEADS(NAME, T)                                                               \
    extern "C" __global__ void rmsnorm_heads_##NAME(T* x, const T* w_first, const T* w_second,   \
                                                    int n_first, int width, int token_stride,     \
                                                    float eps, float w_offset) {                  \
        rmsnorm_heads_impl<T>(x, w_first, w_second, n_first, width, token_stride, eps,            \
                              w_offset);                                                          \
    }
HALO_FOR_DTYPES(HALO_RMSNORM_HEADS)
