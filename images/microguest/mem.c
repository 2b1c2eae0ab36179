/*
 * The memory work, bit-identical to qmpgmem/guest/protocol.py (pattern_words, hash_bytes).
 * Word loops unrolled by four with independent multiplies; no per-byte work. The hash is a
 * sum, so the four lanes keep their own accumulators and add up at the end.
 */
#include "microguest.h"

#define GOLDEN 0x9e3779b97f4a7c15ULL
#define MIX1 0xbf58476d1ce4e5b9ULL
#define MIX2 0x94d049bb133111ebULL
#define HASH_MUL 0xff51afd7ed558ccdULL

static inline u64 mix64(u64 z)
{
    z = (z ^ (z >> 30)) * MIX1;
    z = (z ^ (z >> 27)) * MIX2;
    return z ^ (z >> 31);
}

/* One word's share of the hash: f(w ^ i*GOLDEN) with f(v) = v*M ^ (v*M >> 32). */
static inline u64 hash_term(u64 w, u64 i_golden)
{
    u64 v = (w ^ i_golden) * HASH_MUL;
    return v ^ (v >> 32);
}

/* Word at region offset o is mix64(seed*GOLDEN + o); dst holds the words from `offset` on. */
void mem_pattern_fill(u64 *dst, u64 nwords, u64 seed, u64 offset)
{
    u64 z = seed * GOLDEN + offset;
    u64 i = 0;
    for (; i + 4 <= nwords; i += 4, z += 32) {
        u64 w0 = mix64(z), w1 = mix64(z + 8), w2 = mix64(z + 16), w3 = mix64(z + 24);
        dst[i] = w0;
        dst[i + 1] = w1;
        dst[i + 2] = w2;
        dst[i + 3] = w3;
    }
    for (; i < nwords; i++, z += 8)
        dst[i] = mix64(z);
}

u64 mem_range_hash(const u64 *src, u64 nwords)
{
    u64 a0 = 0, a1 = 0, a2 = 0, a3 = 0;
    u64 k = 0; /* i * GOLDEN for the first lane */
    u64 i = 0;
    for (; i + 4 <= nwords; i += 4, k += 4 * GOLDEN) {
        a0 += hash_term(src[i], k);
        a1 += hash_term(src[i + 1], k + GOLDEN);
        a2 += hash_term(src[i + 2], k + 2 * GOLDEN);
        a3 += hash_term(src[i + 3], k + 3 * GOLDEN);
    }
    for (; i < nwords; i++, k += GOLDEN)
        a0 += hash_term(src[i], k);
    return mix64((a0 + a1 + a2 + a3) ^ nwords);
}

u64 mem_first_nonzero(const u64 *src, u64 nwords)
{
    u64 i = 0;
    for (; i + 8 <= nwords; i += 8) {
        if (src[i] | src[i + 1] | src[i + 2] | src[i + 3] | src[i + 4] | src[i + 5] |
            src[i + 6] | src[i + 7])
            break;
    }
    for (; i < nwords; i++)
        if (src[i])
            return i;
    return nwords;
}
