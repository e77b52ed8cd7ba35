-- +goose Up
-- Backup repositories. secrets holds the password and S3 credentials,
-- sealed with the server's secret key (never stored in the clear).
CREATE TABLE repositories (
    id           TEXT PRIMARY KEY,
    project_id   TEXT NOT NULL REFERENCES projects(id),
    name         TEXT NOT NULL,
    url          TEXT NOT NULL,
    node_id      TEXT NOT NULL,
    is_default   INTEGER NOT NULL DEFAULT 0,
    same_disk    INTEGER NOT NULL DEFAULT 0,
    state        TEXT NOT NULL,
    state_detail TEXT NOT NULL DEFAULT '',
    s3_region    TEXT NOT NULL DEFAULT '',
    has_s3_keys  INTEGER NOT NULL DEFAULT 0,
    secrets      TEXT NOT NULL,
    created_at   TEXT NOT NULL
);
CREATE UNIQUE INDEX repositories_name ON repositories (project_id, name);

-- +goose Down
DROP TABLE repositories;
