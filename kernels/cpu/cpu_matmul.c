/* kernels/cpu/cpu_matmul.c — linear layers (out = inp @ W^T + b) and the
 * general gemm, all on oneDNN's row-major dnnl_sgemm. Only the bias
 * initialisation and the bias-gradient column sums are our own loops. */
#include "cpu.h"

#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>

/* Columns per task of the bias-gradient column sums. */
#define CPU_DBIAS_COLS 64

void cpu_gemm(int transa, int transb, int M, int N, int K, float alpha,
              const float *A, int lda, const float *B, int ldb,
              float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {   /* C = beta * C; dnnl_sgemm is not asked about K = 0 */
        for (int i = 0; i < M; i++)
            for (int j = 0; j < N; j++)
                C[(size_t)i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[(size_t)i * ldc + j];
        return;
    }
    dnnl_status_t st = dnnl_sgemm(transa ? 'T' : 'N', transb ? 'T' : 'N',
                                  M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (st != dnnl_success)
        fprintf(stderr, "kernels/cpu/cpu_matmul.c: dnnl_sgemm(%c%c, M=%d N=%d K=%d, "
                "lda=%d ldb=%d ldc=%d) failed with status %d\n",
                transa ? 'T' : 'N', transb ? 'T' : 'N', M, N, K, lda, ldb, ldc,
                (int)st);
}

/* out: (N,OC) = inp: (N,C) @ weight^T [+ bias: (OC)] (+ out if beta = 1);
 * weight: (OC,C). With a bias, out is first set to (or incremented by) the
 * bias, then the product is accumulated by one sgemm with beta = 1. */
void cpu_matmul_forward(float *out, const float *inp, const float *weight,
                        const float *bias, int N, int C, int OC, float beta)
{
    if (bias) {
        #pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            float *o = out + (size_t)n * OC;
            if (beta == 0.0f) {
                #pragma omp simd
                for (int j = 0; j < OC; j++) o[j] = bias[j];
            } else {
                #pragma omp simd
                for (int j = 0; j < OC; j++) o[j] = beta * o[j] + bias[j];
            }
        }
        beta = 1.0f;
    }
    cpu_gemm(0, 1, N, OC, C, 1.0f, inp, C, weight, C, beta, out, OC);
}

/* dinp: (N,C) += dout: (N,OC) @ weight: (OC,C);
 * dweight: (OC,C) += dout^T @ inp: (N,C); dbias: (OC) += sum_n dout[n,:].
 * NULL gradients are skipped. */
void cpu_matmul_backward(float *dinp, float *dweight, float *dbias,
                         const float *dout, const float *inp,
                         const float *weight, int N, int C, int OC)
{
    if (dinp)
        cpu_gemm(0, 0, N, C, OC, 1.0f, dout, OC, weight, C, 1.0f, dinp, C);
    if (dweight)
        cpu_gemm(1, 0, OC, C, N, 1.0f, dout, OC, inp, C, 1.0f, dweight, C);
    if (dbias) {
        /* Each task owns a block of columns: no races, fixed summation
         * order (deterministic for any thread count). */
        int nblk = (OC + CPU_DBIAS_COLS - 1) / CPU_DBIAS_COLS;
        #pragma omp parallel for schedule(static)
        for (int b = 0; b < nblk; b++) {
            int j0 = b * CPU_DBIAS_COLS;
            int nj = OC - j0 < CPU_DBIAS_COLS ? OC - j0 : CPU_DBIAS_COLS;
            float acc[CPU_DBIAS_COLS] = {0};
            for (int n = 0; n < N; n++) {
                const float *d = dout + (size_t)n * OC + j0;
                #pragma omp simd
                for (int j = 0; j < nj; j++) acc[j] += d[j];
            }
            for (int j = 0; j < nj; j++) dbias[j0 + j] += acc[j];
        }
    }
}
