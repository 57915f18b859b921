-- 0003: training runs as a job queue, and their event log (the SSE source).
-- 0002 (datasets, rewards, pipelines) comes with the catalog.

CREATE TABLE runs (
    id            text PRIMARY KEY,                  -- run-<hex>
    name          text NOT NULL UNIQUE,
    pipeline_id   text NOT NULL,
    status        text NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    base_model    text,
    overrides     jsonb NOT NULL DEFAULT '{}',
    spec          jsonb NOT NULL,                    -- compiled for aha-engine train
    dataset_ids   text[] NOT NULL DEFAULT '{}',      -- datasets the run reads (DELETE refuses them)
    tags          text[] NOT NULL DEFAULT '{}',
    last_seq      bigint NOT NULL DEFAULT 0,         -- highest run_events.seq
    error         text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    finished_at   timestamptz
);
CREATE INDEX runs_status_idx ON runs (status, created_at);

-- Every event of a run, numbered from 1 without gaps: the SSE `id:`.
-- Writers insert in order and then NOTIFY aha_run_events, '<run id>:<seq>'.
-- The last event of a finished run is a `status` event whose data has
-- "status" in (succeeded, failed, cancelled).
CREATE TABLE run_events (
    run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    seq         bigint NOT NULL,
    type        text NOT NULL,   -- metric, sample, stage, checkpoint, status, log, error
    data        jsonb NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, seq)
);
