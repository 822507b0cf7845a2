// rope.cu: rotary position embedding applied in place to the q and k heads of the fused QKV
// buffer ([tokens, (n_heads + 2 * n_kv) * head_dim]), Hugging Face's rotate-half layout: element
// i pairs with i + head_dim / 2. `inv_freq` comes from the host (halo_model's RopeConfig, which
// implements default, linear and llama3 scaling), so the kernel is the same for every variant.
// The angle is pos * inv_freq in f32, as transformers computes it; cos and sin are rounded to T
// as transformers casts them to the activation dtype.
#include "halo_common.cuh"

template <typename T>
__device__ void rope_impl(T* __restrict__ qkv, const int* __restrict__ positions,
                          const float* __restrict__ inv_freq, int n_heads, int n_kv,
                          int head_dim) {
    const int row = blockIdx.x;
    const int half = head_dim / 2;
    const int rotated_heads = n_heads + n_kv; // q heads then k heads; v is left alone
    const float pos = (float)positions[row];
    T* base = qkv + (size_t)row * (n_heads + 2 * n_kv) * head_dim;
    for (int j = threadIdx.x; j < rotated_heads * half; j += blockDim.x) {
        const int h = j / half, i = j % half;
        const float angle = pos * inv_freq[i];
        const float c = round_to<T>(cosf(angle)), s = round_to<T>(sinf(angle));
        T* x = base + (size_t)h * head_dim;
        const float x1 = to_f32(x[i]), x2 = to_f32(x[i + half]);
        x[i] = from_f32<T>(x1 * c - x2 * s);
        x[i + half] = from_f32<T>(x2 * c + x1 * s);
    }
}

#define HALO_ROPE(NAME, T)                                                                        \
    extern "C" __global__ void rope_##NAME(T* qkv, const int* positions, const float* inv_freq,  \
                                           int n_heads, int n_kv, int head_dim) {                 \
        rope_impl<T>(qkv, positions, inv_freq, n_heads, n_kv, head_dim);                          \
    }
HALO_FOR_DTYPES(HALO_ROPE)
