/*
 * The host's side of the range hash at memory speed: qmpgmem/guest/protocol.py's pattern and
 * hash (the definition; images/microguest/mem.c is the guest's copy), as partial sums.
 *
 * Why partial sums: the hash is acc = sum_i f(w_i ^ i*GOLDEN), finished as mix64(acc ^ n), so
 * any split of a range into slices hashes as the sum of the slices' partial sums. Python
 * finishes; threads (pthreads) each sum a slice; the memory model adds runs of content.
 *
 * Built by qmpgmem/fasthash/build.py with the host's gcc for the baseline x86-64 ISA, plus
 * AVX2 / AVX-512 clones picked at load time from the CPU it runs on (the lab's emulated CPU
 * has no AVX-512; a -march=native object would die there with SIGILL).
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <sys/mman.h>
#include <unistd.h>

#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

#define GOLDEN 0x9e3779b97f4a7c15ULL
#define MIX1 0xbf58476d1ce4e5b9ULL
#define MIX2 0x94d049bb133111ebULL
#define HASH_MUL 0xff51afd7ed558ccdULL
#define MAX_THREADS 64

typedef uint64_t u64;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define CLONES
#endif

static inline u64 mix64(u64 z)
{
    z = (z ^ (z >> 30)) * MIX1;
    z = (z ^ (z >> 27)) * MIX2;
    return z ^ (z >> 31);
}

static inline u64 term(u64 w, u64 i)
{
    u64 v = (w ^ (i * GOLDEN)) * HASH_MUL;
    return v ^ (v >> 32);
}

enum kind { MEMORY = 0, PATTERN = 1, ZERO = 2 };

/* Partial sum over words [0, n) of a slice whose first word has range index `index`. */
CLONES static u64 sum_memory(const u64 *src, u64 n, u64 index)
{
    u64 acc = 0;
    for (u64 k = 0; k < n; k++)
        acc += term(src[k], index + k);
    return acc;
}

/* The pattern word at region offset o is mix64(seed*GOLDEN + o); `base` is that for word 0. */
CLONES static u64 sum_pattern(u64 base, u64 n, u64 index)
{
    u64 acc = 0;
    for (u64 k = 0; k < n; k++)
        acc += term(mix64(base + 8 * k), index + k);
    return acc;
}

CLONES static u64 sum_zero(u64 n, u64 index)
{
    u64 acc = 0;
    for (u64 k = 0; k < n; k++)
        acc += term(0, index + k);
    return acc;
}

struct job {
    int kind;
    const u64 *src;
    u64 base;
    u64 n;
    u64 index;
    int populate;
    int err;
    u64 acc;
};

static void *run(void *arg)
{
    struct job *j = arg;
    if (j->kind == MEMORY && j->populate && j->n) {
        long page = sysconf(_SC_PAGESIZE);
        uintptr_t lo = (uintptr_t)j->src & ~(uintptr_t)(page - 1);
        uintptr_t hi = (uintptr_t)(j->src + j->n);
        /* One call faults the slice's pages in (EINVAL before Linux 5.14: faults then come
         * one page at a time from the loop). EFAULT/EIO: a page the host may not touch. */
        if (madvise((void *)lo, hi - lo, MADV_POPULATE_READ) != 0 && errno != EINVAL) {
            j->err = errno;
            return NULL;
        }
    }
    if (j->kind == MEMORY)
        j->acc = sum_memory(j->src, j->n, j->index);
    else if (j->kind == PATTERN)
        j->acc = sum_pattern(j->base, j->n, j->index);
    else
        j->acc = sum_zero(j->n, j->index);
    return NULL;
}

/*
 * The partial sum of `n` words of `kind` whose first word has range index `index`, split over
 * `threads` threads (the caller's own thread takes the first slice). MEMORY reads `src`,
 * first faulting it in with MADV_POPULATE_READ when `populate`; PATTERN generates from
 * `base` = seed*GOLDEN + offset. Returns 0, or an errno (nothing summed; *acc untouched).
 */
int qh_sum(int kind, const void *src, u64 base, u64 n, u64 index, int threads, int populate,
           u64 *acc)
{
    struct job jobs[MAX_THREADS];
    pthread_t tids[MAX_THREADS];
    int started[MAX_THREADS] = {0};
    if (threads < 1)
        threads = 1;
    if (threads > MAX_THREADS)
        threads = MAX_THREADS;
    if ((u64)threads > n / 4096 + 1)
        threads = (int)(n / 4096 + 1); /* no thread for less than 32 KiB of words */
    u64 per = n / (u64)threads;
    per -= per % 512; /* slices start on 4 KiB boundaries of the range */
    for (int t = 0; t < threads; t++) {
        u64 first = (u64)t * per;
        jobs[t] = (struct job){
            .kind = kind,
            .src = (const u64 *)src + (kind == MEMORY ? first : 0),
            .base = base + 8 * first,
            .n = t == threads - 1 ? n - first : per,
            .index = index + first,
            .populate = populate,
        };
    }
    for (int t = 1; t < threads; t++)
        started[t] = pthread_create(&tids[t], NULL, run, &jobs[t]) == 0;
    run(&jobs[0]);
    for (int t = 1; t < threads; t++) {
        if (started[t])
            pthread_join(tids[t], NULL);
        else
            run(&jobs[t]); /* no thread to be had: the caller does it */
    }
    u64 sum = 0;
    for (int t = 0; t < threads; t++) {
        if (jobs[t].err)
            return jobs[t].err;
        sum += jobs[t].acc;
    }
    *acc = sum;
    return 0;
}

/* The ABI version build.py checks, so a stale object from an older source is never used. */
int qh_abi(void)
{
    return 1;
}
