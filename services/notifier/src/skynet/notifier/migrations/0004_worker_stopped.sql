-- skynet schema, version 4: a worker that stopped cleanly.
--
-- A worker's last heartbeat, sent as it stops, says so: stopped_at is when. A worker that
-- starts again under the same name clears it with its next heartbeat. A worker killed outright
-- sends nothing; its row only grows stale.

ALTER TABLE workers ADD COLUMN stopped_at timestamptz;
