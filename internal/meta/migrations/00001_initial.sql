-- +goose Up
CREATE TABLE projects (
    id         TEXT PRIMARY KEY,
    name       TEXT NOT NULL UNIQUE,
    created_at TEXT NOT NULL
);

CREATE TABLE tokens (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    project_id   TEXT NOT NULL REFERENCES projects(id),
    role         TEXT NOT NULL,
    hash         TEXT NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    last_used_at TEXT
);

CREATE TABLE nodes (
    id           TEXT PRIMARY KEY,
    name         TEXT NOT NULL UNIQUE,
    token_hash   TEXT NOT NULL UNIQUE,
    address      TEXT NOT NULL DEFAULT '',
    capacity     BIGINT NOT NULL DEFAULT 0,
    available    BIGINT NOT NULL DEFAULT 0,
    heartbeat_at TEXT,
    created_at   TEXT NOT NULL
);

CREATE TABLE volumes (
    id             TEXT PRIMARY KEY,
    project_id     TEXT NOT NULL REFERENCES projects(id),
    name           TEXT NOT NULL,
    kind           TEXT NOT NULL,
    node_id        TEXT NOT NULL REFERENCES nodes(id),
    size           BIGINT NOT NULL,
    allocated      BIGINT NOT NULL DEFAULT 0,
    state          TEXT NOT NULL,
    state_detail   TEXT NOT NULL DEFAULT '',
    head_parent_id TEXT,
    labels         TEXT NOT NULL DEFAULT '{}',
    created_at     TEXT NOT NULL,
    updated_at     TEXT NOT NULL
);
-- A name is unique in its project among volumes that are not deleted.
CREATE UNIQUE INDEX volumes_live_name ON volumes (project_id, name) WHERE state <> 'deleted';

CREATE TABLE snapshots (
    id          TEXT PRIMARY KEY,
    volume_id   TEXT NOT NULL REFERENCES volumes(id),
    name        TEXT NOT NULL,
    tag         TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    parent_id   TEXT,
    kind        TEXT NOT NULL DEFAULT 'user',
    state       TEXT NOT NULL,
    size        BIGINT NOT NULL DEFAULT 0,
    seq         BIGINT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX snapshots_name ON snapshots (volume_id, name);
CREATE UNIQUE INDEX snapshots_tag ON snapshots (volume_id, tag);
CREATE INDEX snapshots_parent ON snapshots (parent_id);

CREATE TABLE exports (
    id          TEXT PRIMARY KEY,
    volume_id   TEXT NOT NULL REFERENCES volumes(id),
    snapshot_id TEXT,
    writable    INTEGER NOT NULL DEFAULT 0,
    name        TEXT NOT NULL,
    address     TEXT NOT NULL,
    port        INTEGER NOT NULL DEFAULT 0,
    state       TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE INDEX exports_volume ON exports (volume_id);

CREATE TABLE tasks (
    id               TEXT PRIMARY KEY,
    seq              BIGINT NOT NULL UNIQUE,
    kind             TEXT NOT NULL,
    state            TEXT NOT NULL,
    project_id       TEXT NOT NULL,
    node_id          TEXT NOT NULL,
    volume_id        TEXT NOT NULL DEFAULT '',
    target_volume_id TEXT NOT NULL DEFAULT '',
    resource_type    TEXT NOT NULL DEFAULT '',
    resource_id      TEXT NOT NULL DEFAULT '',
    params           TEXT NOT NULL DEFAULT '{}',
    bytes_done       BIGINT NOT NULL DEFAULT 0,
    bytes_total      BIGINT NOT NULL DEFAULT 0,
    error            TEXT NOT NULL DEFAULT '',
    error_code       TEXT NOT NULL DEFAULT '',
    log              TEXT NOT NULL DEFAULT '[]',
    cancelable       INTEGER NOT NULL DEFAULT 0,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    result           TEXT NOT NULL DEFAULT '{}',
    created_at       TEXT NOT NULL,
    started_at       TEXT,
    finished_at      TEXT
);
CREATE INDEX tasks_active ON tasks (node_id, state, seq);
CREATE INDEX tasks_volume ON tasks (volume_id, state);

-- +goose Down
DROP TABLE tasks;
DROP TABLE exports;
DROP TABLE snapshots;
DROP TABLE volumes;
DROP TABLE nodes;
DROP TABLE tokens;
DROP TABLE projects;
