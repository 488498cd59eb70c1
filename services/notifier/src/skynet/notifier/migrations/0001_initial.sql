-- skynet schema, version 1.
--
-- events      append-only log of lifecycle events (and progress ticks, pruned after a short time).
--             seq is the cursor clients page and stream with; id makes writes idempotent.
-- files       one current-state row per (source, path), written in event created_at order.
-- file_counts per (source, state) counters kept by statement-level triggers on files, so that
--             /v1/status never counts a million rows.
-- workers     the last heartbeat of each worker.
--
-- Paths and sources use the "C" collation: byte order, so that a btree answers path-prefix
-- queries (LIKE 'a/b/%') and cursor pagination with range scans.

CREATE TABLE events (
    seq         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id          text NOT NULL,
    type        text NOT NULL,
    source      text COLLATE "C" NOT NULL,
    path        text COLLATE "C" NOT NULL,
    state       text NOT NULL,
    worker      text,
    size        bigint,
    created_at  timestamptz NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    payload     jsonb NOT NULL,
    CONSTRAINT events_id_key UNIQUE (id)
);
CREATE INDEX events_file_idx ON events (source, path, seq);
CREATE INDEX events_created_idx ON events (created_at);
CREATE INDEX events_progress_idx ON events (created_at) WHERE state = 'progress';

CREATE TABLE files (
    source        text COLLATE "C" NOT NULL,
    path          text COLLATE "C" NOT NULL,
    state         text NOT NULL,
    size          bigint,
    bytes_done    bigint,
    attempts      integer NOT NULL DEFAULT 0,
    last_error    text,
    remote        text,
    checksum      text,
    worker        text,
    state_at      timestamptz NOT NULL,   -- created_at of the event that set the state
    progress_at   timestamptz,            -- created_at of the newest progress tick applied
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    last_event_id text,
    PRIMARY KEY (source, path)
) WITH (fillfactor = 80);
CREATE INDEX files_path_idx ON files (path, source);
CREATE INDEX files_state_path_idx ON files (state, path, source);
CREATE INDEX files_state_time_idx ON files (state, state_at);

CREATE TABLE file_counts (
    source text COLLATE "C" NOT NULL,
    state  text NOT NULL,
    n      bigint NOT NULL,
    PRIMARY KEY (source, state)
);

CREATE FUNCTION skynet_files_count_ins() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO file_counts AS c (source, state, n)
    SELECT source, state, count(*) FROM new_rows GROUP BY source, state ORDER BY source, state
    ON CONFLICT (source, state) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION skynet_files_count_upd() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO file_counts AS c (source, state, n)
    SELECT source, state, sum(d) FROM (
        SELECT source, state, 1 AS d FROM new_rows
        UNION ALL
        SELECT source, state, -1 AS d FROM old_rows
    ) x
    GROUP BY source, state HAVING sum(d) <> 0 ORDER BY source, state
    ON CONFLICT (source, state) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE FUNCTION skynet_files_count_del() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO file_counts AS c (source, state, n)
    SELECT source, state, -count(*) FROM old_rows GROUP BY source, state ORDER BY source, state
    ON CONFLICT (source, state) DO UPDATE SET n = c.n + EXCLUDED.n;
    RETURN NULL;
END $$;

CREATE TRIGGER files_count_ins AFTER INSERT ON files
    REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION skynet_files_count_ins();
CREATE TRIGGER files_count_upd AFTER UPDATE ON files
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION skynet_files_count_upd();
CREATE TRIGGER files_count_del AFTER DELETE ON files
    REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION skynet_files_count_del();

CREATE TABLE workers (
    worker     text PRIMARY KEY,
    role       text NOT NULL,
    source     text NOT NULL,
    host       text,
    active     integer NOT NULL DEFAULT 0,
    capacity   integer NOT NULL DEFAULT 0,
    bytes_sent bigint NOT NULL DEFAULT 0,
    files_done bigint NOT NULL DEFAULT 0,
    started_at timestamptz,
    last_seen  timestamptz NOT NULL
);
