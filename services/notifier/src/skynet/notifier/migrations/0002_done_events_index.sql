-- skynet schema, version 2: the dashboard's throughput chart.
--
-- Per-minute files and bytes done over the last hour are counted from the done events. A partial
-- index holding only those events (with size and source included) answers that with an
-- index-only range scan on created_at, however many progress ticks and other events the log holds.

CREATE INDEX events_done_idx ON events (created_at) INCLUDE (source, size) WHERE state = 'done';
