-- 0002: the training catalog: datasets (metadata; the bytes live in the data
-- directory as datasets/<sha256>.jsonl), reward specs and pipeline definitions.

CREATE TABLE datasets (
    seq         bigserial PRIMARY KEY,           -- keyset pagination order
    id          text NOT NULL UNIQUE,            -- ds-<hex>
    name        text NOT NULL,
    purpose     text NOT NULL CHECK (purpose IN ('pretrain', 'sft', 'rl', 'eval')),
    sha256      text NOT NULL,                   -- hex; the file is datasets/<sha256>.jsonl
    rows        bigint NOT NULL,
    bytes       bigint NOT NULL,
    fields      jsonb NOT NULL,                  -- per-field statistics
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (sha256, purpose)                     -- the same bytes for the same purpose: one dataset
);
CREATE INDEX datasets_purpose_idx ON datasets (purpose, seq);

CREATE TABLE rewards (
    seq         bigserial PRIMARY KEY,
    id          text NOT NULL UNIQUE,            -- rw-<hex>
    name        text NOT NULL,
    spec        jsonb NOT NULL,                  -- validated by reward_spec_parse
    components  text[] NOT NULL,                 -- metric names, in spec order
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE pipelines (
    seq         bigserial PRIMARY KEY,
    id          text NOT NULL UNIQUE,            -- pl-<hex>
    name        text NOT NULL UNIQUE,
    spec        jsonb NOT NULL,                  -- as posted (references are resolved per run)
    stages      jsonb NOT NULL,                  -- [{name, kind}]
    builtin     boolean NOT NULL DEFAULT false,  -- created by the server (a template)
    created_at  timestamptz NOT NULL DEFAULT now()
);
