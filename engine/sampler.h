/* engine/sampler.h — picking the next token from one row of logits:
 * penalties, temperature, top-k, top-p (nucleus), min-p, greedy, with the
 * caller's random state, plus the log-softmax helpers that logprobs need.
 * Not here: batching, stop conditions (engine/generate.c). */
#ifndef AHA_SAMPLER_H
#define AHA_SAMPLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rng.h"

/* Most alternatives a logprobs request may ask for (as OpenAI's 20). */
#define SAMPLER_MAX_TOP 20

/* Defaults (sampler_params_default): temperature 1, top_p 1, top_k 0,
 * min_p 0, penalties off. */
struct sampler_params {
    float temperature;          /* >= 0; 0 = greedy (argmax, lowest id on ties) */
    float top_p;                /* (0,1]; 1 = off */
    int top_k;                  /* <= 0 = off */
    float min_p;                /* [0,1]; keep p >= min_p * p_max; 0 = off */
    float repetition_penalty;   /* > 0; 1 = off. CTRL (Keskar et al. 2019) as
                                 * HF/vLLM: ids in prompt or output get
                                 * logit/r if > 0, else logit*r */
    float presence_penalty;     /* OpenAI: logit -= presence * (count > 0) */
    float frequency_penalty;    /* OpenAI: logit -= frequency * count */
};

void sampler_params_default(struct sampler_params *p);
/* Checks the ranges above; 0, or -1 with err naming the field. */
int sampler_params_check(const struct sampler_params *p, char *err, size_t errlen);
/* Whether the penalties need the token history (counts / seen). */
bool sampler_needs_history(const struct sampler_params *p);

/* Per-thread scratch for V-sized work; sampler_scratch_new returns a new
 * one (caller frees with sampler_scratch_free) or NULL. */
struct sampler_scratch;
struct sampler_scratch *sampler_scratch_new(int V);
void sampler_scratch_free(struct sampler_scratch *s);

/* The next token from logits: (V), which are overwritten (penalties,
 * temperature, probabilities). counts: (V) occurrences of each id in the
 * output so far and seen: (V) nonzero for ids in prompt or output, both
 * borrowed and only read when a penalty needs them (may be NULL otherwise).
 * Draws exactly one uniform from r unless greedy. Order as vLLM: penalties,
 * temperature, top-k, top-p (over the top-k set), min-p, then sampling. */
int32_t sampler_sample(const struct sampler_params *p, float *logits, int V,
                       const int32_t *counts, const uint8_t *seen, struct rng *r,
                       struct sampler_scratch *s);

/* log(sum(exp(logits))) of a row: (V), max-subtracted, summed in double. */
float sampler_logsumexp(const float *logits, int V);
/* The k largest logits of a row (k <= SAMPLER_MAX_TOP), descending, ties
 * by lower id: ids: (k), vals: (k). */
void sampler_topk(const float *logits, int V, int k, int32_t *ids, float *vals);

#endif
