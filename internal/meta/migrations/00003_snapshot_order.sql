-- +goose Up
-- Snapshot lists page in creation order per volume.
CREATE INDEX snapshots_volume_seq ON snapshots (volume_id, seq);

-- +goose Down
DROP INDEX snapshots_volume_seq;
