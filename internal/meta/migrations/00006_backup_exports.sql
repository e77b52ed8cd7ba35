-- +goose Up
-- unique_bytes: the stored bytes only this backup holds (what forgetting it
-- and pruning would free), refreshed after each backup and forget in its
-- repository. backup_exports: backups served read-only over NBD by a node,
-- straight from the repository.
ALTER TABLE backups ADD COLUMN unique_bytes BIGINT NOT NULL DEFAULT 0;

CREATE TABLE backup_exports (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL REFERENCES projects(id),
    backup_id     TEXT NOT NULL,
    repository_id TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    name          TEXT NOT NULL,
    address       TEXT NOT NULL,
    port          INTEGER NOT NULL DEFAULT 0,
    state         TEXT NOT NULL,
    tls           INTEGER NOT NULL DEFAULT 0,
    tls_cert      TEXT NOT NULL DEFAULT '',
    tls_key       TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL
);
CREATE INDEX backup_exports_backup ON backup_exports (backup_id);
CREATE INDEX backup_exports_node ON backup_exports (node_id);

-- +goose Down
DROP TABLE backup_exports;
ALTER TABLE backups DROP COLUMN unique_bytes;
