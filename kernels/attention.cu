// attention.cu: paged attention for prefill chunks and decode tokens in one launch.
//
// One block per (query token, query head). The token's sequence and position come from
// `tok_seq` / `tok_pos`; its keys are positions lo..=pos of that sequence (causal), read from the
// paged cache through the sequence's row of `block_tables`, where lo = pos - window + 1 with a
// sliding window (Hugging Face: query q sees key k iff q - window < k <= q) and 0 without.
// The new tokens' K/V were written to the cache before this launch, so a prefill chunk sees
// itself. GQA: query head h reads kv head h / (n_heads / n_kv). Scores are q.k * scale (the
// family's: head_dim^-0.5, Gemma's query_pre_attn_scalar^-0.5), then, with softcap > 0,
// softcap * tanh(score / softcap) (Gemma 2), in transformers' order.
//
// Each warp walks keys lo + w, lo + w + ATTN_WARPS, ... with an online softmax in f32; the warps'
// partial states are merged in warp order. The split depends only on the sequence's own length,
// never on the batch, so the result is the same alone or batched. A row with tok_seq < 0 is a
// padding row of a CUDA-graph bucket and gets zeros.
#include "halo_common.cuh"

#define ATTN_WARPS 4
#define ATTN_MAX_PER_LANE 8 // head_dim <= 256

template <typename T>
__device__ void attention_impl(T* __restrict__ out, const T* __restrict__ qkv,
                               const T* __restrict__ k_cache, const T* __restrict__ v_cache,
                               const int* __restrict__ tok_seq, const int* __restrict__ tok_pos,
                               const int* __restrict__ block_tables, int max_blocks,
                               int block_size, int n_heads, int n_kv, int head_dim, float scale,
                               float softcap, int window) {
    __shared__ float s_m[ATTN_WARPS], s_l[ATTN_WARPS];
    __shared__ float s_acc[ATTN_WARPS][ATTN_MAX_PER_LANE * HALO_WARP];
    const int row = blockIdx.x, h = blockIdx.y;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    T* o = out + (size_t)row * n_heads * head_dim + (size_t)h * head_dim;
    const int seq = tok_seq[row];
    if (seq < 0) {
        for (int d = threadIdx.x; d < head_dim; d += blockDim.x) o[d] = from_f32<T>(0.0f);
        return;
    }
    const int pos = tok_pos[row];
    const int lo = window > 0 ? max(0, pos - window + 1) : 0;
    const int kvh = h / (n_heads / n_kv);
    const int kv_width = n_kv * head_dim;
    const T* q = qkv + (size_t)row * (n_heads + 2 * n_kv) * head_dim + (size_t)h * head_dim;
    const int* table = block_tables + (size_t)seq * max_blocks;

    float qr[ATTN_MAX_PER_LANE], acc[ATTN_MAX_PER_LANE];
#pragma unroll
    for (int e = 0; e < ATTN_MAX_PER_LANE; ++e) {
        const int d = lane + e * HALO_WARP;
        qr[e] = d < head_dim ? to_f32(q[d]) : 0.0f;
        acc[e] = 0.0f;
    }
    float m = -HALO_INF, l = 0.0f;
    for (int k = lo + warp; k <= pos; k += ATTN_WARPS) {
        const long long slot = (long long)table[k / block_size] * block_size + k % block_size;
        const T* kr = k_cache + (size_t)slot * kv_width + (size_t)kvh * head_dim;
        const T* vr = v_cache + (size_t)slot * kv_width + (size_t)kvh * head_dim;
        float dot = 0.0f;
#pragma unroll
        for (int e = 0; e < ATTN_MAX_PER_LANE; ++e) {
            const int d = lane + e * HALO_WARP;
            if (d < head_dim) dot += qr[e] * to_f32(kr[d]);
        }
        float s = warp_sum(dot) * scale;
        if (softcap > 0.0f) s = tanhf(s / softcap) * softcap;
        const float m_new = fmaxf(m, s);
        const float corr = expf(m - m_new); // exp(-inf) = 0 on the first key
        const float p = expf(s - m_new);
        l = l * corr + p;
#pragma unroll
        for (int e = 0; e < ATTN_MAX_PER_LANE; ++e) {
            const int d = lane + e * HALO_WARP;
            const float v = d < head_dim ? to_f32(vr[d]) : 0.0f;
            acc[e] = acc[e] * corr + p * v;
        }
        m = m_new;
    }
    if (lane == 0) {
        s_m[warp] = m;
        s_l[warp] = l;
    }
#pragma unroll
    for (int e = 0; e < ATTN_MAX_PER_LANE; ++e) s_acc[warp][lane + e * HALO_WARP] = acc[e];
    __syncthreads();
    float mm = -HALO_INF;
    for (int w = 0; w < ATTN_WARPS; ++w) mm = fmaxf(mm, s_m[w]);
    float ll = 0.0f;
    for (int w = 0; w < ATTN_WARPS; ++w) ll += s_l[w] * expf(s_m[w] - mm); // empty warps: 0
    for (int d = threadIdx.x; d < head_dim; d += blockDim.x) {
        float v = 0.0f;
        for (int w = 0; w < ATTN_WARPS; ++w) v += s_acc[w][d] * expf(s_m[w] - mm);
        o[d] = from_f32<T>(v / ll);
    }
}

#define HALO_ATTN(NAME, T)                                                                        \
    extern "C" __global__ void __launch_bounds__(ATTN_WARPS * HALO_WARP)                         \
        paged_attention_##NAME(T* out, const T* qkv, const T* k_cache, const T* v_cache,         \
                               const int* tok_seq, const int* tok_pos, const int* block_tables,   \
                               int max_blocks, int block_size, int n_heads, int n_kv,             \
                               int head_dim, float scale, float softcap, int window) {            \
        attention_impl<T>(out, qkv, k_cache, v_cache, tok_seq, tok_pos, block_tables,             \
                          max_blocks, block_size, n_heads, n_kv, head_dim, scale, softcap,        \
                          window);                                                                \
    }
HALO_FOR_DTYPES(HALO_ATTN)
