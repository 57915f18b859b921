-- 0003: training runs as a job queue, their event log (the SSE source), and
-- what ingest derives from the events: stages, metrics, samples, checkpoints.
-- 0002 (datasets, rewards, pipelines) comes with the catalog.

CREATE TABLE runs (
    id            text PRIMARY KEY,                  -- run-<hex>
    name          text NOT NULL UNIQUE,              -- [A-Za-z0-9._-]; stage models are <name>/<stage>
    pipeline_id   text NOT NULL,                     -- catalog id, or 'inline'
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
    finished_at   timestamptz,
    -- the queue: a server claims a run (FOR UPDATE SKIP LOCKED), then renews
    -- heartbeat_at while its engine runs; a run whose lease lapsed belongs
    -- to a dead server and is re-queued from its last checkpoint.
    claimed_by    text,                              -- server instance id (srv-<hex>)
    heartbeat_at  timestamptz,
    attempt       integer NOT NULL DEFAULT 0,        -- engine processes started
    auto_resume   boolean NOT NULL DEFAULT false,    -- re-queue after an engine crash
    auto_resumes  integer NOT NULL DEFAULT 0,
    resume_from   text,                              -- checkpoint for the next start
    cancel_requested boolean NOT NULL DEFAULT false,
    integrations  jsonb,                             -- MLflow / webhook configuration
    integrations_state jsonb                         -- what integrations_state returned
);
CREATE INDEX runs_status_idx ON runs (status, created_at);
CREATE INDEX runs_created_idx ON runs (created_at DESC, id DESC);

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

CREATE TABLE run_stages (
    run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    name        text NOT NULL,
    kind        text,
    status      text NOT NULL,   -- running, succeeded, failed
    path        text,            -- the stage's output directory once succeeded
    info        jsonb NOT NULL DEFAULT '{}',
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    PRIMARY KEY (run_id, name)
);

-- One row per value. A resumed engine re-emits the steps after its
-- checkpoint: the key keeps the first value of each (stage, name, step).
CREATE TABLE run_metrics (
    run_id  text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage   text NOT NULL,
    name    text NOT NULL,
    step    bigint NOT NULL,
    value   double precision,    -- NULL for a non-finite value
    PRIMARY KEY (run_id, stage, name, step)
);

-- Rollouts with their rewards; ord numbers the samples of one step.
CREATE TABLE run_samples (
    run_id  text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage   text NOT NULL,
    step    bigint NOT NULL,
    ord     integer NOT NULL,
    data    jsonb NOT NULL,
    PRIMARY KEY (run_id, stage, step, ord)
);

CREATE TABLE run_checkpoints (
    run_id      text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    stage       text NOT NULL,
    step        bigint NOT NULL,
    path        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, stage, step)
);
