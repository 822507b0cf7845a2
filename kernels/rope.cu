// rope.cu: rotary position embedding applied in place to the q and k heads of the fused QKV
// buffer ([tokens, (n_heads + 2 * n_kv) * head_dim]), Hugging Face's rotate-half layout over the
// first `rotary_dim` values of each head: element i pairs with i + rotary_dim / 2, and the values
// past rotary_dim are left alone (partial rotary, Phi-4-mini). The inverse frequencies come from
// the host (halo_model's RotaryTables: default, linear, llama3 and LongRoPE scaling), so the
// kernel is the same for every variant.
//
// LongRoPE has a second set: a row uses `inv_freq_long` when the model has one (`long_from` >= 0)
// and its `long_rope` flag is set, the flag of its sequence that the engine decided
// (crates/halo-cuda/src/plan.rs), as the CPU backend follows the same flag
// (crates/halo-cpu/src/rope.rs). The angle is pos * inv_freq in f32, as transformers
// computes it; cos and sin are scaled by `attn_factor` and then rounded to T, as transformers
// multiplies by its attention scaling before casting to the activation dtype.
#include "halo_common.cuh"

template <typename T>
__device__ void rope_impl(T* __restrict__ qkv, const int* __restrict__ positions,
                          const int* __restrict__ long_rope, const float* __restrict__ inv_freq,
                          const float* __restrict__ inv_freq_long, int long_from, int n_heads,
                          int n_kv, int head_dim, int rotary_dim, float attn_factor) {
    const int row = blockIdx.x;
    const int half = rotary_dim / 2;
    const int rotated_heads = n_heads + n_kv; // q heads then k heads; v is left alone
    const float pos = (float)positions[row];
    const bool use_long = long_from >= 0 && long_rope[row] != 0;
    const float* freq = use_long ? inv_freq_long : inv_freq;
    T* base = qkv + (size_t)row * (n_heads + 2 * n_kv) * head_dim;
    for (int j = threadIdx.x; j < rotated_heads * half; j += blockDim.x) {
        const int h = j / half, i = j % half;
        const float angle = pos * freq[i];
        const float c = round_to<T>(cosf(angle) * attn_factor);
        const float s = round_to<T>(sinf(angle) * attn_factor);
        T* x = base + (size_t)h * head_dim;
        const float x1 = to_f32(x[i]), x2 = to_f32(x[i + half]);
        x[i] = from_f32<T>(x1 * c - x2 * s);
        x[i + half] = from_f32<T>(x2 * c + x1 * s);
    }
}

#define HALO_ROPE(NAME, T)                                                                        \
    extern "C" __global__ void rope_##NAME(T* qkv, const int* positions, const int* long_rope,    \
                                           const float* inv_freq, const float* inv_freq_long,     \
                                           int long_from, int n_heads, int n_kv, int head_dim,    \
                                           int rotary_dim, float attn_factor) {                   \
        rope_impl<T>(qkv, positions, long_rope, inv_freq, inv_freq_long, long_from, n_heads, n_kv, \
                     head_dim, rotary_dim, attn_factor);                                          \
    }
HALO_FOR_DTYPES(HALO_ROPE)
