// embed.cu: the embedding gather, one block per token row, times `scale` (Gemma's sqrt(hidden),
// 1 elsewhere: exact). transformers makes the scale a tensor of the activation dtype, so it is
// rounded to T before it multiplies. Ids were validated on the host; an id outside the table
// still writes zeros rather than reading out of bounds.
#include "halo_common.cuh"

template <typename T>
__device__ void embed_impl(T* __restrict__ out, const T* __restrict__ table,
                           const unsigned* __restrict__ ids, int hidden, int vocab, float scale) {
    const int row = blockIdx.x;
    const unsigned id = ids[row];
    T* dst = out + (size_t)row * hidden;
    if (id >= (unsigned)vocab) {
        for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = from_f32<T>(0.0f);
        return;
    }
    const T* src = table + (size_t)id * hidden;
    const float k = round_to<T>(scale);
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = from_f32<T>(to_f32(src[i]) * k);
}

#define HALO_EMBED(NAME, T)                                                                       \
    extern "C" __global__ void embed_##NAME(T* out, const T* table, const unsigned* ids,          \
                                            int hidden, int vocab, float scale) {                 \
        embed_impl<T>(out, table, ids, hidden, vocab, scale);                                     \
    }
HALO_FOR_DTYPES(HALO_EMBED)

// Copies selected rows (the last token of each sampled sequence) into a dense matrix.
template <typename T>
__device__ void gather_rows_impl(T* __restrict__ out, const T* __restrict__ in,
                                 const int* __restrict__ rows, int hidden) {
    const int r = blockIdx.x;
    const T* src = in + (size_t)rows[r] * hidden;
    T* dst = out + (size_t)r * hidden;
    for (int i = threadIdx.x; i < hidden; i += blockDim.x) dst[i] = src[i];
}

#define HALO_GATHER(NAME, T)                                                                      \
    extern "C" __global__ void gather_rows_##NAME(T* out, const T* in, const int* rows,          \
                                                  int hidden) {                                   \
        gather_rows_impl<T>(out, in, rows, hidden);                                               \
    }
HALO_FOR_DTYPES(HALO_GATHER)
