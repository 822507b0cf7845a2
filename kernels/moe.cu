// moe.cu: the sparse mixture-of-experts feed-forward (Mixtral, Qwen3-MoE). A layer is five
// launches with no host round trip, so a decode step through MoE layers is still one captured
// CUDA graph:
//   moe_route    router logits (T) -> each token's top_k experts, ascending id, and their weights
//   moe_group    the step's (token, slot) pairs sorted by expert: offsets[E + 1], order, pos
//   moe_linear   y[i] = x[src(i)] . W[expert of i]^T for every sorted pair i (gate|up, then down)
//   silu_mul     activation.cu's kernel, over the pairs' gate|up rows
//   moe_combine  delta[t] = sum over t's experts, ascending id, of weight * y
//
// Arithmetic follows transformers (MixtralSparseMoeBlock, Qwen3MoeSparseMoeBlock) and the CPU
// backend (crates/halo-cpu/src/moe.rs): softmax over all router logits in f32, top_k of the
// probabilities (equal ones go to the lower id), divided by their best-first sum when
// `renorm`, the weight rounded to T, each expert's output scaled in T and accumulated in T from
// zero in ascending expert id (transformers' index_add_ over the experts that were hit).
//
// Cost: sorting pairs by expert lets each expert's weights stream from memory once per step
// whatever the batch; experts no token chose are not read. Every output element is one warp's
// fixed-order dot product, so a token's numbers do not depend on what else is in the step.
#include "halo_common.cuh"

// The largest expert count and top_k the kernels hold in shared memory (checked at load).
#define MOE_MAX_EXPERTS 256
#define MOE_MAX_TOP_K 32
// Warps per moe_linear block, each computing one output column for every pair of its expert.
#define MOE_LINEAR_WARPS 8

// One block per token; its first thread does the whole routing in the reference's sequential
// order (E and top_k are small: 8..256 and 2..8 in the families served).
template <typename T>
__device__ void moe_route_impl(const T* __restrict__ logits, int experts, int top_k, int renorm,
                               int* __restrict__ ids, float* __restrict__ weights) {
    __shared__ float probs[MOE_MAX_EXPERTS];
    __shared__ int chosen[MOE_MAX_TOP_K];
    __shared__ float chosen_p[MOE_MAX_TOP_K];
    if (threadIdx.x != 0) return;
    const int t = blockIdx.x;
    const T* row = logits + (size_t)t * experts;
    float max = -HALO_INF;
    for (int e = 0; e < experts; ++e) max = fmaxf(max, to_f32(row[e]));
    float sum = 0.0f;
    for (int e = 0; e < experts; ++e) {
        probs[e] = expf(__fsub_rn(to_f32(row[e]), max));
        sum = __fadd_rn(sum, probs[e]);
    }
    const float inv = 1.0f / sum;
    for (int e = 0; e < experts; ++e) probs[e] = __fmul_rn(probs[e], inv);

    // Best first. A taken expert's probability becomes -1 (probabilities are >= 0); `best`
    // starts at the first untaken one, so even NaN scores pick a valid, distinct expert.
    float kept = 0.0f;
    for (int s = 0; s < top_k; ++s) {
        int best = -1;
        for (int e = 0; e < experts; ++e) {
            if (probs[e] == -1.0f) continue;
            if (best < 0 || probs[e] > probs[best]) best = e;
        }
        chosen[s] = best;
        chosen_p[s] = probs[best];
        kept = __fadd_rn(kept, probs[best]);
        probs[best] = -1.0f;
    }
    if (renorm) {
        for (int s = 0; s < top_k; ++s) chosen_p[s] = chosen_p[s] / kept;
    }
    // Ascending id: the order the combination adds them in.
    for (int s = 1; s < top_k; ++s) {
        const int id = chosen[s];
        const float p = chosen_p[s];
        int j = s - 1;
        while (j >= 0 && chosen[j] > id) {
            chosen[j + 1] = chosen[j];
            chosen_p[j + 1] = chosen_p[j];
            --j;
        }
        chosen[j + 1] = id;
        chosen_p[j + 1] = p;
    }
    for (int s = 0; s < top_k; ++s) {
        ids[(size_t)t * top_k + s] = chosen[s];
        weights[(size_t)t * top_k + s] = chosen_p[s];
    }
}

#define HALO_MOE_ROUTE(NAME, T)                                                                   \
    extern "C" __global__ void moe_route_##NAME(const T* logits, int experts, int top_k,          \
                                                int renorm, int* ids, float* weights) {           \
        moe_route_impl<T>(logits, experts, top_k, renorm, ids, weights);                          \
    }
HALO_FOR_DTYPES(HALO_MOE_ROUTE)

// One block. Pair p = token * top_k + slot chose expert ids[p]. Writes, for every expert e, the
// range offsets[e]..offsets[e + 1] of `order` holding its pairs in ascending p, and pos[p], where
// pair p sits in `order`. Deterministic: no atomics, each expert's thread scans the pairs in order.
extern "C" __global__ void moe_group(const int* __restrict__ ids, int pairs, int experts,
                                     int* __restrict__ offsets, int* __restrict__ order,
                                     int* __restrict__ pos) {
    __shared__ int start[MOE_MAX_EXPERTS];
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        int count = 0;
        for (int p = 0; p < pairs; ++p) count += ids[p] == e;
        start[e] = count;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        int run = 0;
        for (int e = 0; e < experts; ++e) {
            const int count = start[e];
            start[e] = run;
            offsets[e] = run;
            run += count;
        }
        offsets[experts] = run;
    }
    __syncthreads();
    for (int e = threadIdx.x; e < experts; e += blockDim.x) {
        int next = start[e];
        for (int p = 0; p < pairs; ++p) {
            if (ids[p] == e) {
                order[next] = p;
                pos[p] = next;
                ++next;
            }
        }
    }
}

// Grid (ceil(n_out / MOE_LINEAR_WARPS), experts). Expert e's weights are [n_out, n_in] at
// w + e * n_out * n_in. For each pair i of expert e (sorted position), the input row is the
// pair's token row of x when `gather_tokens` (gate|up reads the normed hidden states), else row
// i (down reads the pairs' activations). out is [pairs, n_out] by sorted position. A warp keeps
// one weight row hot in L1 across the expert's pairs; lanes stride the row and the warp sums
// them in a fixed tree.
template <typename T>
__device__ void moe_linear_impl(T* __restrict__ out, const T* __restrict__ x,
                                const T* __restrict__ w, const int* __restrict__ offsets,
                                const int* __restrict__ order, int n_out, int n_in, int top_k,
                                int gather_tokens) {
    const int e = blockIdx.y;
    const int lane = threadIdx.x & 31;
    const int col = blockIdx.x * MOE_LINEAR_WARPS + (threadIdx.x >> 5);
    if (col >= n_out) return;
    const int begin = offsets[e], end = offsets[e + 1];
    const T* wrow = w + ((size_t)e * n_out + col) * n_in;
    for (int i = begin; i < end; ++i) {
        const int src = gather_tokens ? order[i] / top_k : i;
        const T* xr = x + (size_t)src * n_in;
        float acc = 0.0f;
        for (int h = lane; h < n_in; h += HALO_WARP) acc = fmaf(to_f32(xr[h]), to_f32(wrow[h]), acc);
        acc = warp_sum(acc);
        if (lane == 0) out[(size_t)i * n_out + col] = from_f32<T>(acc);
    }
}

#define HALO_MOE_LINEAR(NAME, T)                                                                  \
    extern "C" __global__ void moe_linear_##NAME(T* out, const T* x, const T* w,                  \
                                                 const int* offsets, const int* order, int n_out, \
                                                 int n_in, int top_k, int gather_tokens) {        \
        moe_linear_impl<T>(out, x, w, offsets, order, n_out, n_in, top_k, gather_tokens);         \
    }
HALO_FOR_DTYPES(HALO_MOE_LINEAR)

// One block per token: out[t] = 0 + w_a * y_a + w_b * y_b + ... over its experts in ascending
// id, the weight rounded to T, each product and each sum rounded to T (transformers scales an
// expert's rows in T, then index_add_s them). Explicit _rn operations: no contraction into FMA.
template <typename T>
__device__ void moe_combine_impl(T* __restrict__ out, const T* __restrict__ y,
                                 const int* __restrict__ pos, const float* __restrict__ weights,
                                 int top_k, int hidden) {
    const int t = blockIdx.x;
    for (int h = threadIdx.x; h < hidden; h += blockDim.x) {
        float acc = 0.0f;
        for (int s = 0; s < top_k; ++s) {
            const size_t p = (size_t)t * top_k + s;
            const float wt = round_to<T>(weights[p]);
            const float v = to_f32(y[(size_t)pos[p] * hidden + h]);
            acc = round_to<T>(__fadd_rn(acc, round_to<T>(__fmul_rn(v, wt))));
        }
        out[(size_t)t * hidden + h] = from_f32<T>(acc);
    }
}

#define HALO_MOE_COMBINE(NAME, T)                                                                 \
    extern "C" __global__ void moe_combine_##NAME(T* out, const T* y, const int* pos,             \
                                                  const float* weights, int top_k, int hidden) {  \
        moe_combine_impl<T>(out, y, pos, weights, top_k, hidden);                                 \
    }
HALO_FOR_DTYPES(HALO_MOE_COMBINE)
