// halo_common.cuh: what every halo kernel shares. Storage types and their conversions, and
// deterministic block reductions.
//
// No system header is included: NVRTC from PyPI ships none, and everything needed here is a
// builtin or one PTX instruction. bf16/f16 are stored as raw 16-bit patterns and converted with
// `cvt` (round to nearest even), which needs sm_80 or newer, the oldest architecture halo builds.
//
// Reductions use a fixed tree (shuffle-xor inside a warp, then warp results in warp order), never
// atomics, so a row's result depends only on the row and the block size: a sequence gets the same
// numbers alone or inside any batch.
#pragma once

struct __align__(2) bf16 { unsigned short bits; };
struct __align__(2) f16 { unsigned short bits; };

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(bf16 x) { return __uint_as_float(((unsigned)x.bits) << 16); }
__device__ __forceinline__ float to_f32(f16 x) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.bits));
    return f;
}

template <typename T> __device__ __forceinline__ T from_f32(float x);
template <> __device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f32<bf16>(float x) {
    bf16 r;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
    return r;
}
template <> __device__ __forceinline__ f16 from_f32<f16>(float x) {
    f16 r;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.bits) : "f"(x));
    return r;
}

// Rounds through the storage type: mirrors a framework that keeps an intermediate in T.
template <typename T> __device__ __forceinline__ float round_to(float x) { return to_f32(from_f32<T>(x)); }

#define HALO_INF __int_as_float(0x7f800000)
__device__ __forceinline__ bool halo_isfinite(float x) {
    return (__float_as_uint(x) & 0x7f800000u) != 0x7f800000u;
}

#define HALO_WARP 32
#define HALO_FULL_MASK 0xffffffffu

__device__ __forceinline__ float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(HALO_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ double warp_sum(double v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(HALO_FULL_MASK, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(HALO_FULL_MASK, v, o));
    return v;
}

// Sums over the block; every thread gets the result. `scratch` holds one slot per warp.
// The leading barrier makes back-to-back calls with one scratch array safe.
template <typename V> __device__ __forceinline__ V block_sum(V v, V* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = warp_sum(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    V total = (V)0;
    for (int w = 0; w < nwarps; ++w) total += scratch[w];
    return total;
}

__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = (blockDim.x + 31) >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    float m = scratch[0];
    for (int w = 1; w < nwarps; ++w) m = fmaxf(m, scratch[w]);
    return m;
}

// Instantiates an extern "C" entry point per storage dtype: NAME_f32, NAME_f16, NAME_bf16.
#define HALO_FOR_DTYPES(M) M(f32, float) M(f16, f16) M(bf16, bf16)
