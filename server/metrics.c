/* server/metrics.c — the fixed metric series of aha-server and their
 * Prometheus text rendering. Histograms use cumulative fixed buckets. */
#include "metrics.h"

#include <stdint.h>
#include <stdlib.h>

#include "util.h"

struct metrics_globals metrics;

static const char *const route_names[ROUTE_COUNT] = {
    "/healthz", "/readyz", "/metrics", "/v1/models", "/v1/models/{id}",
    "/v1/completions", "/v1/chat/completions", "/v1/traces", "/v1/traces/{id}", "/v1/datasets",
    "/v1/rewards", "/v1/pipelines", "/v1/runs", "/dashboard", "other",
};

const char *metrics_route_name(enum metrics_route r)
{
    return (unsigned)r < ROUTE_COUNT ? route_names[r] : "other";
}

/* requests[route][status - 100] for statuses 100..599 */
static atomic_long requests[ROUTE_COUNT][500];

#define HIST_BUCKETS 14
static const double hist_bounds[HIST_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
};

/* finer buckets for the server's own time per request */
static const double overhead_bounds[HIST_BUCKETS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1,
};

struct hist {
    const double *bounds;                 /* NULL: hist_bounds */
    atomic_long bucket[HIST_BUCKETS + 1]; /* last one is +Inf */
    atomic_long count;
    atomic_llong sum_us;
};

static struct hist hist_ttft, hist_itl, hist_duration, hist_overhead = {.bounds = overhead_bounds};

static void hist_observe(struct hist *h, double v)
{
    const double *b = h->bounds ? h->bounds : hist_bounds;
    int i = 0;
    while (i < HIST_BUCKETS && v > b[i]) i++;
    atomic_fetch_add(&h->bucket[i], 1);
    atomic_fetch_add(&h->count, 1);
    atomic_fetch_add(&h->sum_us, (long long)(v * 1e6));
}

void metrics_request(enum metrics_route r, int status, double seconds)
{
    if ((unsigned)r >= ROUTE_COUNT) r = ROUTE_OTHER;
    if (status < 100 || status > 599) status = 500;
    atomic_fetch_add(&requests[r][status - 100], 1);
    hist_observe(&hist_duration, seconds);
}

void metrics_ttft(double seconds) { hist_observe(&hist_ttft, seconds); }
void metrics_itl(double seconds) { hist_observe(&hist_itl, seconds); }
void metrics_overhead(double seconds) { hist_observe(&hist_overhead, seconds); }

static void render_hist(sbuf *b, const char *name, const char *help, struct hist *h)
{
    sbuf_printf(b, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
    const double *bounds = h->bounds ? h->bounds : hist_bounds;
    long cum = 0;
    for (int i = 0; i <= HIST_BUCKETS; i++) {
        cum += atomic_load(&h->bucket[i]);
        if (i < HIST_BUCKETS)
            sbuf_printf(b, "%s_bucket{le=\"%g\"} %ld\n", name, bounds[i], cum);
        else
            sbuf_printf(b, "%s_bucket{le=\"+Inf\"} %ld\n", name, cum);
    }
    sbuf_printf(b, "%s_sum %.6f\n%s_count %ld\n", name,
                (double)atomic_load(&h->sum_us) * 1e-6, name, atomic_load(&h->count));
}

static void render_one(sbuf *b, const char *name, const char *type, const char *help,
                       long v)
{
    sbuf_printf(b, "# HELP %s %s\n# TYPE %s %s\n%s %ld\n", name, help, name, type, name, v);
}

char *metrics_render(void)
{
    sbuf b = {0};
    sbuf_puts(&b, "# HELP aha_http_requests_total HTTP requests by route and status.\n"
                  "# TYPE aha_http_requests_total counter\n");
    for (int r = 0; r < ROUTE_COUNT; r++)
        for (int s = 0; s < 500; s++) {
            long v = atomic_load(&requests[r][s]);
            if (v)
                sbuf_printf(&b, "aha_http_requests_total{route=\"%s\",status=\"%d\"} %ld\n",
                            route_names[r], s + 100, v);
        }
    render_hist(&b, "aha_http_request_duration_seconds",
                "Time from request start to the end of its response.", &hist_duration);
    render_hist(&b, "aha_time_to_first_token_seconds",
                "Time from request start to the first generated token.", &hist_ttft);
    render_hist(&b, "aha_inter_token_latency_seconds",
                "Time between consecutive generated tokens of one choice.", &hist_itl);
    render_hist(&b, "aha_server_overhead_seconds",
                "Request time spent in the server: total minus the engine's time "
                "(from sending the generate to its last event).", &hist_overhead);
    render_one(&b, "aha_prompt_tokens_total", "counter", "Prompt tokens processed.",
               atomic_load(&metrics.prompt_tokens));
    render_one(&b, "aha_prompt_tokens_cached_total", "counter",
               "Prompt tokens whose keys and values the engine's prefix cache held.",
               atomic_load(&metrics.prompt_tokens_cached));
    render_one(&b, "aha_generation_tokens_total", "counter", "Tokens generated.",
               atomic_load(&metrics.generation_tokens));
    render_one(&b, "aha_requests_running", "gauge", "Generations producing tokens.",
               atomic_load(&metrics.running));
    render_one(&b, "aha_requests_waiting", "gauge",
               "Generations sent to the engine that have no token yet.",
               atomic_load(&metrics.waiting));
    render_one(&b, "aha_engine_restarts_total", "counter", "Engine process restarts.",
               atomic_load(&metrics.engine_restarts));
    /* the engine's, as of its last stats (vLLM's names in the comments) */
    const long kv_total = atomic_load(&metrics.engine_kv_blocks_total);
    sbuf_printf(&b, "# HELP aha_kv_cache_usage_ratio Fraction of the engine's KV cache blocks "
                    "in use (vllm:kv_cache_usage_perc).\n# TYPE aha_kv_cache_usage_ratio gauge\n"
                    "aha_kv_cache_usage_ratio %.4f\n",
                kv_total ? (double)atomic_load(&metrics.engine_kv_blocks_used) / kv_total : 0.0);
    render_one(&b, "aha_engine_sequences_running", "gauge",
               "Sequences the engine is prefilling, decoding or has preempted "
               "(vllm:num_requests_running).", atomic_load(&metrics.engine_active));
    render_one(&b, "aha_engine_requests_waiting", "gauge",
               "Requests queued in the engine for KV memory (vllm:num_requests_waiting).",
               atomic_load(&metrics.engine_waiting));
    render_one(&b, "aha_preemptions_total", "counter",
               "Sequences that gave their KV blocks back to be computed again later "
               "(vllm:num_preemptions).", atomic_load(&metrics.engine_preemptions));
    render_one(&b, "aha_spec_decode_draft_tokens_total", "counter",
               "Speculative draft tokens checked (vllm:spec_decode_num_draft_tokens).",
               atomic_load(&metrics.engine_spec_drafted));
    render_one(&b, "aha_spec_decode_accepted_tokens_total", "counter",
               "Of them, kept (vllm:spec_decode_num_accepted_tokens).",
               atomic_load(&metrics.engine_spec_accepted));
    render_one(&b, "aha_prefix_cache_queries_total", "counter",
               "Prompt tokens looked up in the prefix cache (vllm:prefix_cache_queries).",
               atomic_load(&metrics.engine_prefix_queries));
    render_one(&b, "aha_prefix_cache_hits_total", "counter",
               "Of them, found (vllm:prefix_cache_hits).",
               atomic_load(&metrics.engine_prefix_hits));
    render_one(&b, "aha_trace_writes_total", "counter", "Traces written to PostgreSQL.",
               atomic_load(&metrics.trace_written));
    render_one(&b, "aha_trace_write_retries_total", "counter",
               "Trace writes that failed and were retried.", atomic_load(&metrics.trace_retried));
    render_one(&b, "aha_trace_writes_dropped_total", "counter",
               "Traces dropped because the queue was full or the server stopped.",
               atomic_load(&metrics.trace_dropped));
    render_one(&b, "aha_trace_queue_depth", "gauge", "Traces waiting to be written.",
               atomic_load(&metrics.trace_queued));
    return b.p;
}
