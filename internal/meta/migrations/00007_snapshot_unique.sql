-- +goose Up
-- unique_bytes: what deleting the snapshot would free, as the node last
-- counted it from the qcow2 tables.
ALTER TABLE snapshots ADD COLUMN unique_bytes BIGINT NOT NULL DEFAULT 0;

-- +goose Down
ALTER TABLE snapshots DROP COLUMN unique_bytes;
