-- skynet schema, version 4: a worker that stopped cleanly; an uploader's target.
--
-- A worker's last heartbeat, sent as it stops, says so: stopped_at is when. A worker that
-- starts again under the same name clears it with its next heartbeat. A worker killed outright
-- sends nothing; its row only grows stale.
--
-- An uploader's heartbeat names its target (a secret-free URL), so that the status can say when
-- two sources send to the same or nested targets.

ALTER TABLE workers ADD COLUMN stopped_at timestamptz, ADD COLUMN target text;
