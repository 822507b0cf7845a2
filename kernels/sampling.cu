// sampling.cu: halo_hal::sampling on the device, one block of SAMPLE_THREADS per sequence.
//
// Same semantics, same order: non-finite check; logprob and top-n from the raw row (log-softmax
// in f64); repetition then frequency/presence penalties; temperature 0 -> argmax (ties to the
// lowest id); otherwise top-k, softmax in f64, top-p prefix, min-p floor, inverse CDF with the
// counter RNG of halo_hal::rng (same integer arithmetic).
//
// The reference sorts candidates by (logit desc, id asc). Instead of sorting, every token gets a
// 64-bit key (order-preserving float bits above, inverted id below) so that a larger key means
// earlier in that order and all keys differ. Each truncation keeps the tokens with key >= some
// threshold, found by bisection over keys where every probe is a fixed-order block reduction:
// no atomics, no dependence on the rest of the batch.
#include "halo_common.cuh"

#define SAMPLE_THREADS 1024
#define SAMPLE_WARPS (SAMPLE_THREADS / 32)

// Mirrors halo_cuda::sampling::SampleParams (#[repr(C)], 64 bytes).
struct SampleParams {
    unsigned long long seed;
    unsigned long long rng_offset;
    float temperature, top_p, min_p, repetition_penalty, frequency_penalty, presence_penalty;
    unsigned top_k, top_n;
    int logits_row, pen_start, pen_len, use_penalties;
};
// One distinct token of a sequence's history. Mirrors halo_cuda::sampling::PenaltyEntry.
struct PenaltyEntry {
    unsigned token, seen, generated_count, pad;
};
// Mirrors halo_cuda::sampling::SampleOut.
struct SampleOut {
    int token;
    float logprob;
    int status; // 0 ok, 1 non-finite logits
    int n_top;
};

__device__ __forceinline__ unsigned long long mix64(unsigned long long z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}
__device__ __forceinline__ double rng_uniform(unsigned long long seed, unsigned long long counter) {
    const unsigned long long z = mix64(seed + (counter + 1ull) * 0x9E3779B97F4A7C15ull);
    return (double)(z >> 11) * (1.0 / 9007199254740992.0);
}

__device__ __forceinline__ unsigned long long sort_key(float l, unsigned id) {
    if (l == 0.0f) l = 0.0f; // -0 and +0 tie, as in the reference's partial_cmp
    unsigned b = __float_as_uint(l);
    b = (b & 0x80000000u) ? ~b : (b | 0x80000000u);
    return ((unsigned long long)b << 32) | (unsigned long long)(0xFFFFFFFFu - id);
}
__device__ __forceinline__ unsigned key_id(unsigned long long key) {
    return 0xFFFFFFFFu - (unsigned)(key & 0xFFFFFFFFull);
}

struct Scratch {
    double d[SAMPLE_WARPS];
    unsigned long long k[SAMPLE_WARPS];
    unsigned u[SAMPLE_WARPS];
    float f[SAMPLE_WARPS];
};

__device__ __forceinline__ unsigned long long block_max_key(unsigned long long v, Scratch& s) {
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long x = __shfl_xor_sync(HALO_FULL_MASK, v, o);
        v = x > v ? x : v;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) s.k[threadIdx.x >> 5] = v;
    __syncthreads();
    unsigned long long r = s.k[0];
    for (int w = 1; w < SAMPLE_WARPS; ++w) r = s.k[w] > r ? s.k[w] : r;
    return r;
}
__device__ __forceinline__ unsigned long long block_min_key(unsigned long long v, Scratch& s) {
    for (int o = 16; o > 0; o >>= 1) {
        const unsigned long long x = __shfl_xor_sync(HALO_FULL_MASK, v, o);
        v = x < v ? x : v;
    }
    __syncthreads();
    if ((threadIdx.x & 31) == 0) s.k[threadIdx.x >> 5] = v;
    __syncthreads();
    unsigned long long r = s.k[0];
    for (int w = 1; w < SAMPLE_WARPS; ++w) r = s.k[w] < r ? s.k[w] : r;
    return r;
}
__device__ __forceinline__ unsigned block_count(unsigned v, Scratch& s) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(HALO_FULL_MASK, v, o);
    __syncthreads();
    if ((threadIdx.x & 31) == 0) s.u[threadIdx.x >> 5] = v;
    __syncthreads();
    unsigned r = 0;
    for (int w = 0; w < SAMPLE_WARPS; ++w) r += s.u[w];
    return r;
}
__device__ __forceinline__ double block_dsum(double v, Scratch& s) {
    return block_sum<double>(v, s.d);
}

// Mass (sum of e / total) of the tokens with key >= k.
__device__ double mass_at_or_above(const float* w, const double* e, int vocab, double total,
                                   unsigned long long k, Scratch& s) {
    double acc = 0.0;
    for (int i = threadIdx.x; i < vocab; i += SAMPLE_THREADS)
        if (sort_key(w[i], i) >= k) acc += e[i] / total;
    return block_dsum(acc, s);
}

extern "C" __global__ void __launch_bounds__(SAMPLE_THREADS)
    sample_tokens(const float* __restrict__ logits, int vocab,
                  const SampleParams* __restrict__ params, const PenaltyEntry* __restrict__ pens,
                  float* __restrict__ work_all, double* __restrict__ e_all,
                  SampleOut* __restrict__ outs, int* __restrict__ top_tokens,
                  float* __restrict__ top_logprobs, int max_top_n) {
    __shared__ Scratch s;
    const int sid = blockIdx.x;
    const SampleParams P = params[sid];
    const float* row = logits + (size_t)P.logits_row * vocab;
    float* work = work_all + (size_t)sid * vocab;
    double* e = e_all + (size_t)sid * vocab;

    // 1. Non-finite check and the raw maximum.
    unsigned bad = 0;
    float mx = -HALO_INF;
    for (int i = threadIdx.x; i < vocab; i += SAMPLE_THREADS) {
        const float x = row[i];
        if (!halo_isfinite(x)) bad = 1;
        else mx = fmaxf(mx, x);
    }
    bad = block_count(bad, s);
    if (bad) {
        if (threadIdx.x == 0) outs[sid] = SampleOut{0, 0.0f, 1, 0};
        return;
    }
    mx = block_max(mx, s.f);

    // 2. log Z of the raw row, in f64.
    double se = 0.0;
    for (int i = threadIdx.x; i < vocab; i += SAMPLE_THREADS) se += exp((double)row[i] - (double)mx);
    se = block_dsum(se, s);
    const double log_z = (double)mx + log(se);

    // 3. Top-n alternatives from the raw row: repeated maxima below the previous key.
    const int n_top = min((int)min(P.top_n, (unsigned)max_top_n), vocab);
    unsigned long long bound = ~0ull;
    for (int j = 0; j < n_top; ++j) {
        unsigned long long best = 0;
        for (int i = threadIdx.x; i < vocab; i += SAMPLE_THREADS) {
            const unsigned long long k = sort_key(row[i], i);
            if (k < bound && k > best) best = k;
        }
        best = block_max_key(best, s);
        if (threadIdx.x == 0) {
            const unsigned t = key_id(best);
            top_tokens[(size_t)sid * max_top_n + j] = (int)t;
            top_logprobs[(size_t)sid * max_top_n + j] = (float)((double)row[t] - log_z);
        }
        bound = best;
    }

    // 4. Penalties on a private copy (the raw row stays for logprobs).
    const float* w = row;
    if (P.use_penalties) {
        for (int i = threadIdx.x; i < vocab; i += SAMPLE_THREADS) work[i] = row[i];
        __syncthreads();
        // Entries name distinct tokens, so threads never touch the same element.
        for (int j = threadIdx.x; j < P.pen_len; j += SAMPLE_THREADS) {
            const PenaltyEntry pe = pens[P.pen_start + j];
            if (pe.token >= (unsigned)vocab) continue;
            float l = work[pe.token];
            if (P.repetition_penalty != 1.0f && pe.seen)
                l = l > 0.0f ? __fdiv_rn(l, P.repetition_penalty) : __fmul_rn(l, P.repetition_penalty);
            if ((P.frequency_penalty != 0.0f || P.presence_penalty != 0.0f) && pe.generated_count > 0)
                l = __fsub_rn(l, __fadd_rn(__fmul_rn((float)pe.generated_count, P.frequency_penalty),
                                           P.presence_penalty));
            work[pe.token] = l;
        }
        __syncthreads();
        w = work;
    }

    // 5. Choose.
    unsigned long long top_key = 0;
    for (int i = threadIdx.x; i < vocab; i += SAMPLE_THREADS) {
        const unsigned long long k = sort_key(w[i], i);
        top_key = k > top_key ? k : top_key;
    }
    top_key = block_max_key(top_key, s);
    unsigned token = key_id(top_key);

    if (P.temperature != 0.0f) {
        const double inv_t = 1.0 / (double)P.temperature;
        const double shift = (double)w[token] * inv_t;
        unsigned long long min_key = ~0ull;
        for (int i = threadIdx.x; i < vocab; i += SAMPLE_THREADS) {
            e[i] = exp((double)w[i] * inv_t - shift);
            const unsigned long long k = sort_key(w[i], i);
            min_key = k < min_key ? k : min_key;
        }
        min_key = block_min_key(min_key, s); // also orders the e[] writes before reads

        // Top-k: the k-th largest key, the largest k0 with count(key >= k0) >= top_k.
        unsigned long long lo = min_key;
        if (P.top_k > 0 && P.top_k < (unsigned)vocab) {
            unsigned long long a = min_key, b = top_key;
            while (a < b) {
                const unsigned long long mid = a + (b - a + 1) / 2;
                unsigned c = 0;
                for (int i = threadIdx.x; i < vocab; i += SAMPLE_THREADS) c += sort_key(w[i], i) >= mid;
                if (block_count(c, s) >= P.top_k) a = mid;
                else b = mid - 1;
            }
            lo = a;
        }
        double total = 0.0;
        for (int i = threadIdx.x; i < vocab; i += SAMPLE_THREADS)
            if (sort_key(w[i], i) >= lo) total += e[i];
        total = block_dsum(total, s);

        // Top-p: the shortest prefix whose mass reaches top_p (all of it if rounding never does).
        if (P.top_p < 1.0f && mass_at_or_above(w, e, vocab, total, lo, s) >= (double)P.top_p) {
            unsigned long long a = lo, b = top_key;
            while (a < b) {
                const unsigned long long mid = a + (b - a + 1) / 2;
                if (mass_at_or_above(w, e, vocab, total, mid, s) >= (double)P.top_p) a = mid;
                else b = mid - 1;
            }
            lo = a;
        }
        // Min-p: probabilities fall along the order, so the floor cuts a prefix too. The top
        // token's probability is exp(0) / total, exactly as the reference computes it.
        if (P.min_p > 0.0f) {
            const double floor_p = (double)P.min_p * (1.0 / total);
            unsigned long long cut = top_key;
            for (int i = threadIdx.x; i < vocab; i += SAMPLE_THREADS) {
                const unsigned long long k = sort_key(w[i], i);
                if (k >= lo && e[i] / total >= floor_p && k < cut) cut = k;
            }
            lo = block_min_key(cut, s);
        }
        // Inverse CDF: the first token in order whose cumulative mass exceeds u * mass; the
        // last kept token if rounding leaves the target at or above the total.
        const double mass = mass_at_or_above(w, e, vocab, total, lo, s);
        const double target = rng_uniform(P.seed, P.rng_offset) * mass;
        unsigned long long a = lo, b = top_key;
        if (mass > target) {
            while (a < b) {
                const unsigned long long mid = a + (b - a + 1) / 2;
                if (mass_at_or_above(w, e, vocab, total, mid, s) > target) a = mid;
                else b = mid - 1;
            }
        }
        // The chosen token has the smallest existing key >= a.
        unsigned long long pick = ~0ull;
        for (int i = threadIdx.x; i < vocab; i += SAMPLE_THREADS) {
            const unsigned long long k = sort_key(w[i], i);
            if (k >= a && k < pick) pick = k;
        }
        token = key_id(block_min_key(pick, s));
    }
    if (threadIdx.x == 0) {
        const float lp = (float)((double)row[token] - log_z);
        outs[sid] = SampleOut{(int)token, fminf(lp, 0.0f), 0, n_top};
    }
}
