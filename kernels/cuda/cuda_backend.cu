/* kernels/cuda/cuda_backend.cu — the CUDA backend's skeleton: device memory,
 * matmuls through cuBLAS (row-major via the transposed column-major
 * identities below) and the vector ops. The remaining ops (attention, norms,
 * RoPE, SwiGLU, log-probs, AdamW) are NULL until the CUDA issue, which also
 * adds the op-by-op parity run against the CPU backend (tests/gpu/run.sh).
 * Compiled by `make CUDA=1`, and by `make test` whenever nvcc exists. */
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <stdio.h>

#include "backend.h"

static cublasHandle_t g_cublas;
static char g_desc[256];

static const char *cuda_describe(void) { return g_desc; }

static void *cuda_alloc(size_t n)
{
    void *p = NULL;
    if (cudaMalloc(&p, n ? n : 1) != cudaSuccess) return NULL;
    cudaMemset(p, 0, n);
    return p;
}
static void cuda_free(void *p) { cudaFree(p); }
static void cuda_upload(void *d, const void *s, size_t n) { cudaMemcpy(d, s, n, cudaMemcpyHostToDevice); }
static void cuda_download(void *d, const void *s, size_t n) { cudaMemcpy(d, s, n, cudaMemcpyDeviceToHost); }
static void cuda_zero(void *p, size_t n) { cudaMemset(p, 0, n); }
static void cuda_copy(void *d, const void *s, size_t n) { cudaMemcpy(d, s, n, cudaMemcpyDeviceToDevice); }

static unsigned blocks(size_t n) { return (unsigned)((n + 255) / 256); }

/* out: (N,OC) += bias: (OC) broadcast over rows */
__global__ static void k_add_bias(float *out, const float *bias, int N, int OC)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < (size_t)N * OC) out[i] += bias[i % OC];
}

/* dbias: (OC) += column sums of dout: (N,OC); one thread per column. */
__global__ static void k_colsum(float *dbias, const float *dout, int N, int OC)
{
    int j = blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= OC) return;
    float s = 0;
    for (int i = 0; i < N; i++) s += dout[(size_t)i * OC + j];
    dbias[j] += s;
}

/* Row-major X: (R,C) is column-major X^T with ld C, so
 *   out^T (OC,N) = W (OC,C) . inp^T (C,N)          -> gemm(T, N)
 *   dinp^T (C,N) += W^T (C,OC) . dout^T (OC,N)      -> gemm(N, N)
 *   dW^T (C,OC) += inp^T (C,N) . dout (N,OC)        -> gemm(N, T)   */
static void cuda_matmul_forward(float *out, const float *inp, const float *w,
                                const float *bias, int N, int C, int OC, float beta)
{
    const float one = 1.0f;
    cublasSgemm(g_cublas, CUBLAS_OP_T, CUBLAS_OP_N, OC, N, C, &one, w, C, inp, C, &beta, out, OC);
    if (bias) k_add_bias<<<blocks((size_t)N * OC), 256>>>(out, bias, N, OC);
}

static void cuda_matmul_backward(float *dinp, float *dw, float *dbias, const float *dout,
                                 const float *inp, const float *w, int N, int C, int OC)
{
    const float one = 1.0f;
    if (dinp) cublasSgemm(g_cublas, CUBLAS_OP_N, CUBLAS_OP_N, C, N, OC, &one, w, C, dout, OC, &one, dinp, C);
    if (dw) cublasSgemm(g_cublas, CUBLAS_OP_N, CUBLAS_OP_T, C, OC, N, &one, inp, C, dout, OC, &one, dw, C);
    if (dbias) k_colsum<<<blocks((size_t)OC), 256>>>(dbias, dout, N, OC);
}

/* Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T. */
static void cuda_gemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                      const float *B, int ldb, float beta, float *C, int ldc)
{
    cublasSgemm(g_cublas, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                N, M, K, &alpha, B, ldb, A, lda, &beta, C, ldc);
}

__global__ static void k_add(float *o, const float *a, const float *b, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) o[i] = a[i] + b[i];
}
__global__ static void k_axpy(float *y, const float *x, float alpha, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) y[i] += alpha * x[i];
}
__global__ static void k_scale(float *x, float s, size_t n)
{
    size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}
static void cuda_add(float *o, const float *a, const float *b, size_t n) { if (n) k_add<<<blocks(n), 256>>>(o, a, b, n); }
static void cuda_axpy(float *y, const float *x, float alpha, size_t n) { if (n) k_axpy<<<blocks(n), 256>>>(y, x, alpha, n); }
static void cuda_scale(float *x, float s, size_t n) { if (n) k_scale<<<blocks(n), 256>>>(x, s, n); }
static double cuda_sumsq(const float *x, size_t n)
{
    float r = 0;
    if (n) cublasSnrm2(g_cublas, (int)n, x, 1, &r);
    return (double)r * r;
}

static struct backend g_cuda;

extern "C" const struct backend *backend_cuda(void)
{
    static int state;   /* 0 untried, 1 ok, -1 unusable */
    if (state == 0) {
        int n = 0;
        cudaDeviceProp prop;
        state = -1;
        if (cudaGetDeviceCount(&n) == cudaSuccess && n > 0 &&
            cudaGetDeviceProperties(&prop, 0) == cudaSuccess &&
            cublasCreate(&g_cublas) == CUBLAS_STATUS_SUCCESS) {
            int ver = 0;
            cublasGetVersion(g_cublas, &ver);
            snprintf(g_desc, sizeof g_desc, "cuBLAS %d sgemm on %s (sm_%d%d)", ver, prop.name,
                     prop.major, prop.minor);
            g_cuda.name = "cuda";
            g_cuda.describe = cuda_describe;
            g_cuda.alloc = cuda_alloc;
            g_cuda.free = cuda_free;
            g_cuda.upload = cuda_upload;
            g_cuda.download = cuda_download;
            g_cuda.zero = cuda_zero;
            g_cuda.copy = cuda_copy;
            g_cuda.matmul_forward = cuda_matmul_forward;
            g_cuda.matmul_backward = cuda_matmul_backward;
            g_cuda.gemm = cuda_gemm;
            g_cuda.add = cuda_add;
            g_cuda.axpy = cuda_axpy;
            g_cuda.scale = cuda_scale;
            g_cuda.sumsq = cuda_sumsq;
            state = 1;
        }
    }
    return state == 1 ? &g_cuda : NULL;
}
