-- +goose Up
-- Volume backups made through the server. The id is the backup's manifest
-- id in its repository. base_tag is the system snapshot the backup was
-- read from; the newest backup of a volume in a repository keeps it as the
-- base of the next, incremental, backup.
CREATE TABLE backups (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL REFERENCES projects(id),
    repository_id TEXT NOT NULL,
    volume_id     TEXT NOT NULL,
    state         TEXT NOT NULL,
    base_tag      TEXT NOT NULL DEFAULT '',
    parent_id     TEXT NOT NULL DEFAULT '',
    logical_size  BIGINT NOT NULL DEFAULT 0,
    bytes_read    BIGINT NOT NULL DEFAULT 0,
    bytes_added   BIGINT NOT NULL DEFAULT 0,
    duration_ms   BIGINT NOT NULL DEFAULT 0,
    error         TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL
);
CREATE INDEX backups_volume ON backups (volume_id, repository_id, created_at);
CREATE INDEX backups_project ON backups (project_id, created_at);

-- +goose Down
DROP TABLE backups;
