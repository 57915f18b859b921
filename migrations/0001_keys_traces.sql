-- 0001: API keys and completion traces (the serving side of aha).
-- Applied by aha-server at start, inside a transaction under an advisory lock.

CREATE TABLE api_keys (
    id          bigserial PRIMARY KEY,
    name        text NOT NULL,
    scope       text NOT NULL CHECK (scope IN ('admin', 'inference', 'read')),
    prefix      text NOT NULL,                 -- first characters, to recognize a key
    key_hash    bytea NOT NULL UNIQUE,         -- SHA-256 of the whole key
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz,
    last_used_at timestamptz
);

CREATE TABLE traces (
    seq              bigserial PRIMARY KEY,     -- keyset pagination order
    id               text NOT NULL UNIQUE,      -- chatcmpl-... / cmpl-... (+ "-N" per extra choice)
    request_id       text NOT NULL,
    choice_index     integer NOT NULL DEFAULT 0,
    endpoint         text NOT NULL CHECK (endpoint IN ('chat.completions', 'completions')),
    model            text NOT NULL,
    params           jsonb NOT NULL,            -- sampling parameters as requested
    prompt           jsonb,                     -- completions: string or token ids
    messages         jsonb,                     -- chat: messages as sent
    reasoning_content text,
    content          text,
    finish_reason    text,
    prompt_tokens    integer,
    completion_tokens integer,
    reasoning_tokens integer,
    ttft_ms          double precision,
    latency_ms       double precision,
    api_key_id       bigint REFERENCES api_keys (id) ON DELETE SET NULL,
    created_at       timestamptz NOT NULL,
    search           tsvector GENERATED ALWAYS AS (
        to_tsvector('simple', coalesce(reasoning_content, '') || ' ' || coalesce(content, ''))
    ) STORED
);

CREATE INDEX traces_search_idx ON traces USING gin (search);
CREATE INDEX traces_created_idx ON traces (created_at, seq);
CREATE INDEX traces_model_idx ON traces (model, seq);
