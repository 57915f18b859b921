/* engine/kd_loss.h — the knowledge-distillation divergence as a pure
 * function: the generalized Jensen-Shannon divergence between a student's
 * and a teacher's next-token distributions, with its gradient with respect
 * to the student logits. No model and no reduction over tokens: the trainer
 * chooses the rows, weights them and runs the backward. Semantics follow
 * TRL's GKDTrainer.generalized_jsd_loss (reduction "none", summed over V). */
#ifndef AHA_KD_LOSS_H
#define AHA_KD_LOSS_H

#include <stddef.h>

/* 0 when beta is in [0, 1] and tau is finite and > 0; otherwise -1 with err
 * naming the parameter ("kd loss: beta ..." / "kd loss: temperature ..."). */
int kd_params_check(float beta, float tau, char *err, size_t errlen);

/* Generalized JSD (GKD, Agarwal et al. 2024, arXiv 2306.13649 eq. 1) of n
 * rows of V logits, row by row, in nats:
 *   s = softmax(zs/tau), t = softmax(zt/tau)
 *   beta = 0:  KL(t || s)                                  (forward KL)
 *   beta = 1:  KL(s || t)                                  (reverse KL)
 *   else:      beta KL(t || m) + (1-beta) KL(s || m),  m = (1-beta) s + beta t
 * A term whose left-hand probability is 0 contributes 0, so -inf logits
 * (masked vocabulary entries) are allowed; a row whose support misses the
 * other's (KL(t||s) with s = 0 where t > 0, or KL(s||t) the other way
 * round) gives +inf, as the math does. Every row needs a finite logit in
 * zs and zt; no logit may be NaN or +inf.
 * zs, zt: (n, V) student and teacher logits, borrowed; zt is not written.
 * loss: (n) or NULL: loss[i] = the divergence of row i.
 * dzs: (n, V) or NULL: dzs[i*V + j] = scale[i] * d loss[i] / d zs[i*V + j]
 *   (the 1/tau of the softmax included). dzs may be zs itself (the trainer
 *   turns a chunk of student logits into its gradient in place); it must
 *   not overlap zt, nor overlap zs other than exactly.
 * scale: (n) or NULL (1 per row): row weights of the gradient only.
 * beta and tau must pass kd_params_check. Accumulates in double; rows are
 * independent and the results do not depend on the number of threads.
 * Returns the sum over rows of the unweighted divergences (double, summed in
 * row order); 0 when n or V is 0. */
double kd_divergence_rows(const float *zs, const float *zt, int n, int V, float beta, float tau,
                          float *loss, float *dzs, const float *scale);

#endif
