-- skynet schema, version 3: what keeps a worker from its work.
--
-- A heartbeat may carry a condition, in a sentence, and since when: an uploader paused because
-- its target is unreachable or refuses it, a watcher whose state folder is full or whose watched
-- folder is gone. NULL while nothing does.

ALTER TABLE workers ADD COLUMN condition text, ADD COLUMN condition_since timestamptz;
