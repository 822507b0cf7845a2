// kv_cache.cu: writes each token's new K and V (from the fused QKV buffer, after RoPE) into the
// paged cache at the slot the host computed from the block table (block * block_size + offset).
// A layer's cache is [slots, n_kv, head_dim]. Slot -1 marks a padding row of a graph bucket.
#include "halo_common.cuh"

template <typename T>
__device__ void kv_write_impl(T* __restrict__ k_cache, T* __restrict__ v_cache,
                              const T* __restrict__ qkv, const long long* __restrict__ slots,
                              int n_heads, int n_kv, int head_dim) {
    const int row = blockIdx.x;
    const long long slot = slots[row];
    if (slot < 0) return;
    const int width = n_kv * head_dim;
    const T* src = qkv + (size_t)row * (n_heads + 2 * n_kv) * head_dim + (size_t)n_heads * head_dim;
    T* kd = k_cache + (size_t)slot * width;
    T* vd = v_cache + (size_t)slot * width;
    for (int i = threadIdx.x; i < width; i += blockDim.x) {
        kd[i] = src[i];
        vd[i] = src[width + i];
    }
}

#define HALO_KV_WRITE(NAME, T)                                                                    \
    extern "C" __global__ void kv_write_##NAME(T* k_cache, T* v_cache, const T* qkv,             \
                                               const long long* slots, int n_heads, int n_kv,     \
                                               int head_dim) {                                    \
        kv_write_impl<T>(k_cache, v_cache, qkv, slots, n_heads, n_kv, head_dim);                  \
    }
HALO_FOR_DTYPES(HALO_KV_WRITE)
