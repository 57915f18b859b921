/* engine/sampler.c — next-token selection for one sequence (sampler.h).
 * Nucleus sampling (Holtzman et al. 2020) without sorting the whole
 * vocabulary: when the nucleus is wanted, every token with probability
 * below (1 - top_p) / V can be dropped first, because all of them together
 * weigh less than 1 - top_p, so the nucleus lies among the others. */
#include "sampler.h"

#include "vexpf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct sampler_cand { float p; int32_t id; };

struct sampler_scratch {
    int V;
    struct sampler_cand *c;     /* (V) */
};

void sampler_params_default(struct sampler_params *p)
{
    p->temperature = 1.0f;
    p->top_p = 1.0f;
    p->top_k = 0;
    p->min_p = 0.0f;
    p->repetition_penalty = 1.0f;
    p->presence_penalty = 0.0f;
    p->frequency_penalty = 0.0f;
}

int sampler_params_check(const struct sampler_params *p, char *err, size_t errlen)
{
    const char *bad = NULL;
    if (!(p->temperature >= 0.0f && p->temperature <= 100.0f)) bad = "temperature: expected a number in [0, 100]";
    else if (!(p->top_p > 0.0f && p->top_p <= 1.0f)) bad = "top_p: expected a number in (0, 1]";
    else if (!(p->min_p >= 0.0f && p->min_p <= 1.0f)) bad = "min_p: expected a number in [0, 1]";
    else if (!(p->repetition_penalty > 0.0f && p->repetition_penalty <= 100.0f)) bad = "repetition_penalty: expected a number in (0, 100]";
    else if (!(p->presence_penalty >= -2.0f && p->presence_penalty <= 2.0f)) bad = "presence_penalty: expected a number in [-2, 2]";
    else if (!(p->frequency_penalty >= -2.0f && p->frequency_penalty <= 2.0f)) bad = "frequency_penalty: expected a number in [-2, 2]";
    if (bad) { snprintf(err, errlen, "%s", bad); return -1; }
    return 0;
}

bool sampler_needs_history(const struct sampler_params *p)
{
    return p->repetition_penalty != 1.0f || p->presence_penalty != 0.0f ||
           p->frequency_penalty != 0.0f;
}

struct sampler_scratch *sampler_scratch_new(int V)
{
    struct sampler_scratch *s = malloc(sizeof *s);
    if (!s) return NULL;
    s->V = V;
    s->c = malloc((size_t)V * sizeof *s->c);
    if (!s->c) { free(s); return NULL; }
    return s;
}

void sampler_scratch_free(struct sampler_scratch *s)
{
    if (!s) return;
    free(s->c);
    free(s);
}

/* a ranks before b: larger value, then lower id */
static inline bool cand_before(float pa, int32_t a, float pb, int32_t b)
{
    return pa > pb || (pa == pb && a < b);
}

static int cand_cmp(const void *x, const void *y)
{
    const struct sampler_cand *a = x, *b = y;
    if (cand_before(a->p, a->id, b->p, b->id)) return -1;
    if (cand_before(b->p, b->id, a->p, a->id)) return 1;
    return 0;
}

/* Min-heap (worst candidate at the root) sift-down over h: (n). */
static void heap_down(struct sampler_cand *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && cand_before(h[w].p, h[w].id, h[l].p, h[l].id)) w = l;
        if (r < n && cand_before(h[w].p, h[w].id, h[r].p, h[r].id)) w = r;
        if (w == i) return;
        struct sampler_cand t = h[i]; h[i] = h[w]; h[w] = t;
        i = w;
    }
}

/* The k best of p: (V) into c: (k), unsorted. */
static void select_topk(const float *p, int V, int k, struct sampler_cand *c)
{
    for (int i = 0; i < k; i++) c[i] = (struct sampler_cand){p[i], i};
    for (int i = k / 2 - 1; i >= 0; i--) heap_down(c, k, i);
    for (int v = k; v < V; v++) {
        if (cand_before(p[v], v, c[0].p, c[0].id)) {
            c[0] = (struct sampler_cand){p[v], v};
            heap_down(c, k, 0);
        }
    }
}

static void apply_penalties(const struct sampler_params *p, float *logits, int V,
                            const int32_t *counts, const uint8_t *seen)
{
    if (p->repetition_penalty != 1.0f && seen) {
        const float r = p->repetition_penalty;
        for (int v = 0; v < V; v++)
            if (seen[v]) logits[v] = logits[v] > 0 ? logits[v] / r : logits[v] * r;
    }
    if ((p->presence_penalty != 0.0f || p->frequency_penalty != 0.0f) && counts) {
        for (int v = 0; v < V; v++)
            if (counts[v])
                logits[v] -= p->presence_penalty + p->frequency_penalty * (float)counts[v];
    }
}

int32_t sampler_sample(const struct sampler_params *p, float *logits, int V,
                       const int32_t *counts, const uint8_t *seen, struct rng *r,
                       struct sampler_scratch *s)
{
    apply_penalties(p, logits, V, counts, seen);
    /* the first index of the largest logit, by a vector max then a scan */
    float mx = -INFINITY;
    #pragma omp simd reduction(max:mx)
    for (int v = 0; v < V; v++) mx = logits[v] > mx ? logits[v] : mx;
    int32_t best = 0;
    while (best < V - 1 && !(logits[best] == mx)) best++;
    if (p->temperature == 0.0f || p->top_k == 1) return best;
    mx = logits[best];

    /* Unnormalised probabilities relative to the max (p_max = 1), in
     * vectors (a scalar expf and a serial double sum over the vocabulary
     * cost more than the rest of a decode step's sampling). */
    const float inv_t = 1.0f / p->temperature;
    #pragma omp simd
    for (int v = 0; v < V; v++) logits[v] = vexpf((logits[v] - mx) * inv_t);
    double sum = 0;
    #pragma omp simd reduction(+:sum)
    for (int v = 0; v < V; v++) sum += logits[v];
    const double u = rng_uniform(r);
    const bool topk = p->top_k > 0 && p->top_k < V, topp = p->top_p < 1.0f;
    if (!topk && !topp) {
        /* full distribution (min-p only drops the small ones) */
        const float thr = p->min_p;
        double kept = sum;
        if (thr > 0) {
            kept = 0;
            for (int v = 0; v < V; v++) kept += logits[v] >= thr ? logits[v] : 0.0f;
        }
        /* the walk to the target: 64-token blocks summed in vectors first,
         * then token by token inside the block that crosses it */
        double target = u * kept, acc = 0;
        int v0 = 0;
        for (; v0 + 64 <= V; v0 += 64) {
            double bsum = 0;
            #pragma omp simd reduction(+:bsum)
            for (int v = v0; v < v0 + 64; v++) bsum += logits[v] >= thr ? logits[v] : 0.0f;
            if (target < acc + bsum) break;
            acc += bsum;
        }
        for (int v = v0; v < V; v++) {
            if (logits[v] < thr) continue;
            acc += logits[v];
            if (target < acc) return v;
        }
        /* rounding left the target past the end: the last kept token of
         * nonzero probability (a logit of -inf, as JSON mode masks, has 0) */
        for (int v = V - 1; v > 0; v--)
            if (logits[v] >= thr && logits[v] > 0) return v;
        return best;
    }

    struct sampler_cand *c = s->c;
    int n = 0;
    if (topk) {
        n = p->top_k;
        select_topk(logits, V, n, c);
    } else {
        float thr = (float)((1.0 - p->top_p) * sum / V);
        if (p->min_p > thr) thr = p->min_p;
        for (int v = 0; v < V; v++)
            if (logits[v] >= thr) c[n++] = (struct sampler_cand){logits[v], v};
    }
    qsort(c, (size_t)n, sizeof *c, cand_cmp);
    double total = sum;
    if (topk) {
        total = 0;
        for (int i = 0; i < n; i++) total += c[i].p;
    }
    if (topp) {
        double acc = 0, want = p->top_p * total;
        int keep = n;
        for (int i = 0; i < n; i++) {
            acc += c[i].p;
            if (acc >= want) { keep = i + 1; break; }
        }
        n = keep;
    }
    if (p->min_p > 0) {
        const float thr = p->min_p * c[0].p;
        int keep = 1;
        while (keep < n && c[keep].p >= thr) keep++;
        n = keep;
    }
    double kept = 0;
    for (int i = 0; i < n; i++) kept += c[i].p;
    double target = u * kept, acc = 0;
    for (int i = 0; i < n; i++) {
        acc += c[i].p;
        if (target < acc) return c[i].id;
    }
    while (n > 1 && !(c[n - 1].p > 0)) n--;     /* top-k past the tokens of nonzero p */
    return c[n - 1].id;
}

float sampler_logsumexp(const float *logits, int V)
{
    float mx = logits[0];
    for (int v = 1; v < V; v++) mx = logits[v] > mx ? logits[v] : mx;
    double sum = 0;
    for (int v = 0; v < V; v++) sum += exp((double)(logits[v] - mx));
    return mx + (float)log(sum);
}

void sampler_topk(const float *logits, int V, int k, int32_t *ids, float *vals)
{
    if (k > V) k = V;
    int n = 0;
    for (int v = 0; v < V; v++) {
        float x = logits[v];
        if (n == k && !cand_before(x, v, vals[n - 1], ids[n - 1])) continue;
        int i = n < k ? n++ : k - 1;
        while (i > 0 && cand_before(x, v, vals[i - 1], ids[i - 1])) {
            vals[i] = vals[i - 1];
            ids[i] = ids[i - 1];
            i--;
        }
        vals[i] = x;
        ids[i] = v;
    }
}
