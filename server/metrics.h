/* server/metrics.h — process-wide counters, gauges and histograms, rendered
 * as Prometheus text for GET /metrics. Lock-free (C11 atomics); safe from
 * any thread. Not a general metrics library: the series are fixed here. */
#ifndef AHA_SERVER_METRICS_H
#define AHA_SERVER_METRICS_H

#include <stdatomic.h>

enum metrics_route {
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
    ROUTE_MODELS,
    ROUTE_MODEL,
    ROUTE_COMPLETIONS,
    ROUTE_CHAT_COMPLETIONS,
    ROUTE_TRACES,
    ROUTE_TRACE,
    ROUTE_DATASETS,
    ROUTE_REWARDS,
    ROUTE_PIPELINES,
    ROUTE_RUNS,
    ROUTE_DASHBOARD,
    ROUTE_OTHER,
    ROUTE_COUNT
};

/* Gauges and counters other modules bump directly. */
struct metrics_globals {
    atomic_long running;          /* generations that have produced a token */
    atomic_long waiting;          /* generations submitted, no token yet */
    atomic_long engine_restarts;
    atomic_long prompt_tokens;
    atomic_long prompt_tokens_cached;   /* of them, from the engine's prefix cache */
    atomic_long generation_tokens;
    atomic_long trace_written;
    atomic_long trace_retried;
    atomic_long trace_dropped;
    atomic_long trace_queued;     /* gauge: traces waiting to be written */
    /* the engine's own figures, polled every second (engine.c) */
    atomic_long engine_kv_blocks_used, engine_kv_blocks_total;
    atomic_long engine_active, engine_waiting;
    atomic_long engine_preemptions, engine_spec_drafted, engine_spec_accepted;
    atomic_long engine_prefix_queries, engine_prefix_hits;
};
extern struct metrics_globals metrics;

const char *metrics_route_name(enum metrics_route r);
/* One finished HTTP request: route, status code, duration in seconds. */
void metrics_request(enum metrics_route r, int status, double seconds);
void metrics_ttft(double seconds);
void metrics_itl(double seconds);
/* Server time of one completion: its total time minus the engine's. */
void metrics_overhead(double seconds);
/* Prometheus text exposition (version 0.0.4); returns a new string
 * (caller frees) or NULL when out of memory. */
char *metrics_render(void);

#endif
