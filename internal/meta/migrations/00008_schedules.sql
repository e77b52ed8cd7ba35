-- +goose Up
-- Schedules: when to snapshot, back up or verify what, and what to keep.
-- Snapshots and backups a schedule made carry its id (retention removes
-- only those; renaming the schedule changes nothing). schedule_runs is each
-- slot's history; leases holds the one scheduler that runs per store.
ALTER TABLE snapshots ADD COLUMN schedule_id TEXT NOT NULL DEFAULT '';
ALTER TABLE backups ADD COLUMN schedule_id TEXT NOT NULL DEFAULT '';

CREATE TABLE schedules (
    id            TEXT PRIMARY KEY,
    project_id    TEXT NOT NULL REFERENCES projects(id),
    name          TEXT NOT NULL,
    action        TEXT NOT NULL,
    volume_ids    TEXT NOT NULL DEFAULT '[]',
    selector      TEXT NOT NULL DEFAULT '{}',
    frequency     TEXT NOT NULL,
    tz            TEXT NOT NULL DEFAULT '',
    keep          INTEGER NOT NULL DEFAULT 0,
    retention     TEXT NOT NULL DEFAULT '{}',
    repository_id TEXT NOT NULL DEFAULT '',
    read_data     DOUBLE PRECISION NOT NULL DEFAULT 0,
    enabled       INTEGER NOT NULL DEFAULT 1,
    jitter_s      INTEGER NOT NULL DEFAULT 0,
    last_slot     TEXT NOT NULL DEFAULT '',
    next_run      TEXT NOT NULL DEFAULT '',
    created_at    TEXT NOT NULL,
    updated_at    TEXT NOT NULL
);
CREATE UNIQUE INDEX schedules_name ON schedules (project_id, name);
CREATE INDEX schedules_due ON schedules (enabled, next_run);

CREATE TABLE schedule_runs (
    id          TEXT PRIMARY KEY,
    schedule_id TEXT NOT NULL,
    project_id  TEXT NOT NULL,
    slot        TEXT NOT NULL,
    volume_id   TEXT NOT NULL DEFAULT '',
    task_id     TEXT NOT NULL DEFAULT '',
    state       TEXT NOT NULL,
    attempt     INTEGER NOT NULL DEFAULT 1,
    retry_at    TEXT NOT NULL DEFAULT '',
    message     TEXT NOT NULL DEFAULT '',
    created_at  TEXT NOT NULL,
    finished_at TEXT NOT NULL DEFAULT ''
);
CREATE INDEX schedule_runs_schedule ON schedule_runs (schedule_id, created_at);
CREATE INDEX schedule_runs_task ON schedule_runs (task_id);
CREATE INDEX schedule_runs_state ON schedule_runs (state, retry_at);

CREATE TABLE leases (
    name       TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    expires_at TEXT NOT NULL
);

-- +goose Down
DROP TABLE leases;
DROP TABLE schedule_runs;
DROP TABLE schedules;
ALTER TABLE backups DROP COLUMN schedule_id;
ALTER TABLE snapshots DROP COLUMN schedule_id;
