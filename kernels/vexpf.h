/* kernels/vexpf.h — a vectorisable fp32 exp, shared by the CPU kernels
 * and the engine's sampler. */
#ifndef AHA_VEXPF_H
#define AHA_VEXPF_H

#include <stdint.h>
#include <string.h>

/* exp(x) in fp32 that gcc vectorises inside `#pragma omp simd` loops (glibc's
 * expf only vectorises under -ffast-math). Cephes expf: x = n*ln2 + r with
 * |r| <= ln2/2 (ln2 split in two for an exact product), exp(r) by Cephes'
 * degree-7 minimax polynomial, times 2^n built in the exponent bits.
 * Max error < 1 ulp over [-86.6, 88.72] against exp in double (tested).
 * Below -86.6 it returns 0 (true value < 2.4e-38), above 88.72 +inf; NaN in,
 * NaN out. No branches, no float->int conversion (the integer n is read
 * from the mantissa of n + 1.5*2^23). */
static inline float vexpf(float x)
{
    const float shift = 12582912.0f;                /* 1.5 * 2^23 */
    float xc = x < -86.6f ? -86.6f : x;
    xc = xc > 88.72283f ? 88.72283f : xc;
    float kf = xc * 1.44269504088896341f + shift;   /* round(x / ln2) */
    float n = kf - shift;
    float r = xc - n * 0.693359375f;                /* ln2 hi (exact) */
    r = r - n * -2.12194440e-4f;                    /* ln2 lo */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * (r * r) + r + 1.0f;
    /* 2^(n-1) * 2 so that n = 128 (x close to 88.72) stays finite. */
    uint32_t kb;
    memcpy(&kb, &kf, sizeof kb);
    uint32_t eb = (kb - 0x4B400000u + 126u) << 23;  /* n + 126 in [1,254] */
    float scale;
    memcpy(&scale, &eb, sizeof scale);
    float y = p * scale * 2.0f;
    y = x < -86.6f ? 0.0f : y;
    y = x > 88.72283f ? __builtin_inff() : y;
    return y;
}

#endif
