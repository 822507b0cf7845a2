// rmsnorm.cu: RMSNorm fused with the residual add that precedes it, one block per row.
//
// With `delta` non-null: residual += delta (rounded to T, as a framework holding the residual
// stream in T does), then out = weight * normalize(residual). Rounding follows Hugging Face's
// LlamaRMSNorm: the normalized row is rounded to T before the weight multiplies it. The sum of
// squares is a fixed-order block reduction in f32.
#include "halo_common.cuh"

template <typename T>
__device__ void add_rmsnorm_impl(T* __restrict__ residual, const T* __restrict__ delta,
                                 const T* __restrict__ weight, T* __restrict__ out, int hidden,
                                 float eps) {
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
        const float n = round_to<T>(to_f32(r[i]) * inv);
        out[base + i] = from_f32<T>(to_f32(weight[i]) * n);
    }
}

#define HALO_RMSNORM(NAME, T)                                                                     \
    extern "C" __global__ void add_rmsnorm_##NAME(T* residual, const T* delta, const T* weight,  \
                                                  T* out, int hidden, float eps) {                \
        add_rmsnorm_impl<T>(residual, delta, weight, out, hidden, eps);                           \
    }
HALO_FOR_DTYPES(HALO_RMSNORM)
