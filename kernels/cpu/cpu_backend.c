/* kernels/cpu/cpu_backend.c — the CPU backend's function table, its
 * description string and host-memory management. The ops themselves live in
 * the other kernels/cpu/cpu_*.c files, one family per file. */
#include "backend.h"
#include "cpu.h"

#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Buffers at least this large are zeroed / copied by all threads: one
 * thread cannot saturate memory bandwidth. */
#define CPU_PARALLEL_BYTES ((size_t)1 << 20)

static const char *cpu_isa_name(dnnl_cpu_isa_t isa)
{
    switch (isa) {
    case dnnl_cpu_isa_sse41: return "sse41";
    case dnnl_cpu_isa_avx: return "avx";
    case dnnl_cpu_isa_avx2: return "avx2";
    case dnnl_cpu_isa_avx512_mic: return "avx512_mic";
    case dnnl_cpu_isa_avx512_mic_4ops: return "avx512_mic_4ops";
    case dnnl_cpu_isa_avx512_core: return "avx512_core";
    case dnnl_cpu_isa_avx512_core_vnni: return "avx512_core_vnni";
    case dnnl_cpu_isa_avx512_core_bf16: return "avx512_core_bf16";
    case dnnl_cpu_isa_avx512_core_amx: return "avx512_core_amx";
    case dnnl_cpu_isa_avx2_vnni: return "avx2_vnni";
    default: return "unknown";
    }
}

static char cpu_description[160];
static pthread_once_t cpu_description_once = PTHREAD_ONCE_INIT;

static void cpu_describe_init(void)
{
    const dnnl_version_t *v = dnnl_version();
    snprintf(cpu_description, sizeof cpu_description,
             "oneDNN %d.%d.%d sgemm, isa %s, %d OpenMP threads",
             v->major, v->minor, v->patch,
             cpu_isa_name(dnnl_get_effective_cpu_isa()), omp_get_max_threads());
}

/* Returns a static string, built once (thread-safe). */
static const char *cpu_describe(void)
{
    pthread_once(&cpu_description_once, cpu_describe_init);
    return cpu_description;
}

/* memset/memcpy split in equal chunks over the OpenMP threads when large. */
static void cpu_zero(void *p, size_t nbytes)
{
    if (!p || nbytes == 0) return;
    if (nbytes < CPU_PARALLEL_BYTES) {
        memset(p, 0, nbytes);
        return;
    }
    #pragma omp parallel
    {
        size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
        size_t lo = nbytes * id / nt, hi = nbytes * (id + 1) / nt;
        memset((char *)p + lo, 0, hi - lo);
    }
}

static void cpu_copy(void *dst, const void *src, size_t nbytes)
{
    if (nbytes == 0) return;
    if (nbytes < CPU_PARALLEL_BYTES) {
        memcpy(dst, src, nbytes);
        return;
    }
    #pragma omp parallel
    {
        size_t nt = (size_t)omp_get_num_threads(), id = (size_t)omp_get_thread_num();
        size_t lo = nbytes * id / nt, hi = nbytes * (id + 1) / nt;
        memcpy((char *)dst + lo, (const char *)src + lo, hi - lo);
    }
}

/* Allocations of at least this size go on 2 MiB transparent huge pages. */
#define CPU_HUGE_MIN ((size_t)4 << 20)
#define CPU_HUGE_PAGE ((size_t)2 << 20)

/* Returns new zeroed memory aligned to 64 bytes (caller frees with
 * cpu_free), or NULL. nbytes == 0 still gives a unique freeable pointer.
 * Large buffers (weights, optimizer state, the KV pool) are 2 MiB aligned
 * and advised onto huge pages: decoding streams every weight once per
 * step, and with 4 KiB pages each page costs a TLB walk (a single
 * sequence's decode of the small model ran 20% faster on huge pages).
 * Where THP is off the advice is ignored and nothing else changes. They
 * are zeroed by giving their pages back (MADV_DONTNEED: private anonymous
 * memory reads as zeros, faulted in when first touched), so that memory
 * is resident only once used: a KV pool as its blocks fill, a packed copy
 * of the weights as it is written (while a served model gives its own
 * back, matrix by matrix). */
static void *cpu_alloc(size_t nbytes)
{
    size_t rounded = (nbytes + 63) & ~(size_t)63;
    if (rounded < nbytes) return NULL;          /* overflow */
    if (rounded == 0) rounded = 64;
    void *p;
    if (rounded >= CPU_HUGE_MIN) {
        size_t huge = (rounded + CPU_HUGE_PAGE - 1) & ~(CPU_HUGE_PAGE - 1);
        if (huge < rounded) return NULL;
        p = aligned_alloc(CPU_HUGE_PAGE, huge);
        if (!p) return NULL;
        madvise(p, huge, MADV_HUGEPAGE);    /* advice only: failure is harmless */
        if (madvise(p, huge, MADV_DONTNEED) != 0) cpu_zero(p, huge);
        return p;
    }
    p = aligned_alloc(64, rounded);
    if (p) cpu_zero(p, rounded);
    return p;
}

static void cpu_free(void *p) { free(p); }

/* The whole pages inside [p, p + nbytes) back to the kernel: anonymous
 * private memory, zero-filled if touched again. */
static void cpu_discard(void *p, size_t nbytes)
{
    const uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
    const uintptr_t a = ((uintptr_t)p + pg - 1) & ~(pg - 1);
    const uintptr_t b = ((uintptr_t)p + nbytes) & ~(pg - 1);
    if (b > a) madvise((void *)a, b - a, MADV_DONTNEED);
}

static void cpu_upload(void *dst_dev, const void *src_host, size_t nbytes)
{
    cpu_copy(dst_dev, src_host, nbytes);
}

static void cpu_download(void *dst_host, const void *src_dev, size_t nbytes)
{
    cpu_copy(dst_host, src_dev, nbytes);
}

_Thread_local int cpu_team;

void cpu_team_run(void (*fn)(void *arg), void *arg)
{
    #pragma omp parallel
    {
        cpu_team = 1;
        fn(arg);
        cpu_team = 0;
    }
}

static const struct backend cpu_backend = {
    .name = "cpu",
    .describe = cpu_describe,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .discard = cpu_discard,
    .upload = cpu_upload,
    .download = cpu_download,
    .zero = cpu_zero,
    .copy = cpu_copy,
    .matmul_forward = cpu_matmul_forward,
    .matmul_backward = cpu_matmul_backward,
    .gemm = cpu_gemm,
    .embedding_forward = cpu_embedding_forward,
    .embedding_backward = cpu_embedding_backward,
    .rmsnorm_forward = cpu_rmsnorm_forward,
    .rmsnorm_backward = cpu_rmsnorm_backward,
    .rope_cos_sin = cpu_rope_cos_sin,
    .rope_forward = cpu_rope_forward,
    .rope_backward = cpu_rope_backward,
    .attention_forward = cpu_attention_forward,
    .attention_backward = cpu_attention_backward,
    .swiglu_forward = cpu_swiglu_forward,
    .swiglu_backward = cpu_swiglu_backward,
    .add = cpu_add,
    .axpy = cpu_axpy,
    .logprob_forward = cpu_logprob_forward,
    .logprob_backward = cpu_logprob_backward,
    .sumsq = cpu_sumsq,
    .scale = cpu_scale,
    .adamw = cpu_adamw,
    .kv_cache_write = cpu_kv_cache_write, .attention_paged_forward = cpu_attention_paged_forward,
    .attention_paged_step = cpu_attention_paged_step,
    .rows_packed_bytes = cpu_rows_packed_bytes,
    .rows_pack = cpu_rows_pack,
    .matmul_rows_forward = cpu_matmul_rows_forward,
    .rows_pack_glu = cpu_rows_pack_glu,
    .matmul_rows_glu_forward = cpu_matmul_rows_glu_forward,
    .team_run = cpu_team_run,
};

const struct backend *backend_cpu(void) { return &cpu_backend; }
