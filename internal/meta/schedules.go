package meta

import (
	"context"
	"encoding/json"
	"time"
)

// Schedule is when to snapshot, back up or verify what, and what to keep.
type Schedule struct {
	ID           string
	ProjectID    string
	Name         string
	Action       string            // snapshot, backup, verify
	VolumeIDs    []string          // the target, or
	Selector     map[string]string // every volume with these labels, at each run
	Frequency    json.RawMessage   // schedule.Frequency as JSON
	TZ           string
	Keep         int             // snapshots: how many of its own to keep
	Retention    json.RawMessage // backups: the retention policy (apitypes.Retention)
	RepositoryID string
	ReadData     float64 // verify: percent of the data to re-read
	Enabled      bool
	JitterS      int
	LastSlot     time.Time // the last slot handled (run or missed); zero: none yet
	NextRun      time.Time // when the scheduler looks at it next; zero: never
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// ScheduleRun is one run of a schedule on one volume (or on the
// repository), or a record of slots missed or skipped.
type ScheduleRun struct {
	ID         string
	ScheduleID string
	ProjectID  string
	Slot       time.Time
	VolumeID   string
	TaskID     string
	State      string // queued, succeeded, failed, retrying, missed, skipped
	Attempt    int
	RetryAt    time.Time
	Message    string
	CreatedAt  time.Time
	FinishedAt time.Time
}

const scheduleCols = `id, project_id, name, action, volume_ids, selector, frequency, tz, keep, retention, repository_id,
	read_data, enabled, jitter_s, last_slot, next_run, created_at, updated_at`

func optTime(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return FormatTime(t)
}

func parseOptTime(s string) time.Time {
	if s == "" {
		return time.Time{}
	}
	return parseTime(s)
}

func scanSchedule(s interface{ Scan(...any) error }) (Schedule, error) {
	var x Schedule
	var vols, sel, freq, ret, last, next, created, updated string
	var enabled int
	err := s.Scan(&x.ID, &x.ProjectID, &x.Name, &x.Action, &vols, &sel, &freq, &x.TZ, &x.Keep, &ret, &x.RepositoryID,
		&x.ReadData, &enabled, &x.JitterS, &last, &next, &created, &updated)
	if err != nil {
		return x, err
	}
	x.VolumeIDs, x.Selector = []string{}, map[string]string{}
	_ = json.Unmarshal([]byte(vols), &x.VolumeIDs)
	_ = json.Unmarshal([]byte(sel), &x.Selector)
	x.Frequency, x.Retention = json.RawMessage(freq), json.RawMessage(ret)
	x.Enabled = enabled != 0
	x.LastSlot, x.NextRun = parseOptTime(last), parseOptTime(next)
	x.CreatedAt, x.UpdatedAt = parseTime(created), parseTime(updated)
	return x, nil
}

func rawText(m json.RawMessage, empty string) string {
	if len(m) == 0 {
		return empty
	}
	return string(m)
}

func (t *Tx) InsertSchedule(ctx context.Context, x Schedule) error {
	_, err := t.exec(ctx, `INSERT INTO schedules (`+scheduleCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		x.ID, x.ProjectID, x.Name, x.Action, jsonText(x.VolumeIDs), jsonText(x.Selector), rawText(x.Frequency, "{}"), x.TZ, x.Keep,
		rawText(x.Retention, "{}"), x.RepositoryID, x.ReadData, boolInt(x.Enabled), x.JitterS, optTime(x.LastSlot), optTime(x.NextRun),
		FormatTime(x.CreatedAt), FormatTime(x.UpdatedAt))
	return err
}

// UpdateSchedule stores everything of a schedule but its id and project.
func (t *Tx) UpdateSchedule(ctx context.Context, x Schedule) error {
	_, err := t.exec(ctx, `UPDATE schedules SET name = ?, action = ?, volume_ids = ?, selector = ?, frequency = ?, tz = ?, keep = ?,
		retention = ?, repository_id = ?, read_data = ?, enabled = ?, jitter_s = ?, last_slot = ?, next_run = ?, updated_at = ? WHERE id = ?`,
		x.Name, x.Action, jsonText(x.VolumeIDs), jsonText(x.Selector), rawText(x.Frequency, "{}"), x.TZ, x.Keep, rawText(x.Retention, "{}"),
		x.RepositoryID, x.ReadData, boolInt(x.Enabled), x.JitterS, optTime(x.LastSlot), optTime(x.NextRun), FormatTime(x.UpdatedAt), x.ID)
	return err
}

func (t *Tx) DeleteSchedule(ctx context.Context, id string) error {
	if _, err := t.exec(ctx, `DELETE FROM schedule_runs WHERE schedule_id = ?`, id); err != nil {
		return err
	}
	_, err := t.exec(ctx, `DELETE FROM schedules WHERE id = ?`, id)
	return err
}

func (t *Tx) ScheduleByID(ctx context.Context, projectID, id string) (Schedule, error) {
	return scanSchedule(t.queryRow(ctx, `SELECT `+scheduleCols+` FROM schedules WHERE project_id = ? AND id = ?`, projectID, id))
}

func (t *Tx) ScheduleByName(ctx context.Context, projectID, name string) (Schedule, error) {
	return scanSchedule(t.queryRow(ctx, `SELECT `+scheduleCols+` FROM schedules WHERE project_id = ? AND name = ?`, projectID, name))
}

// Schedules lists a project's schedules by name, after the name cursor.
func (t *Tx) Schedules(ctx context.Context, projectID, after string, limit int) ([]Schedule, error) {
	return t.schedules(ctx, `SELECT `+scheduleCols+` FROM schedules WHERE project_id = ? AND name > ? ORDER BY name LIMIT ?`,
		projectID, after, limit)
}

// DueSchedules lists the enabled schedules whose next run is at or before
// now, soonest first.
func (t *Tx) DueSchedules(ctx context.Context, now time.Time, limit int) ([]Schedule, error) {
	return t.schedules(ctx, `SELECT `+scheduleCols+` FROM schedules WHERE enabled = 1 AND next_run <> '' AND next_run <= ?
		ORDER BY next_run LIMIT ?`, FormatTime(now), limit)
}

// NextScheduleRun returns the earliest next run of the enabled schedules
// (zero when there is none).
func (t *Tx) NextScheduleRun(ctx context.Context) (time.Time, error) {
	var s string
	err := t.queryRow(ctx, `SELECT COALESCE(MIN(next_run), '') FROM schedules WHERE enabled = 1 AND next_run <> ''`).Scan(&s)
	return parseOptTime(s), err
}

func (t *Tx) schedules(ctx context.Context, q string, args ...any) ([]Schedule, error) {
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Schedule
	for rows.Next() {
		x, err := scanSchedule(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, x)
	}
	return out, rows.Err()
}

const scheduleRunCols = `id, schedule_id, project_id, slot, volume_id, task_id, state, attempt, retry_at, message, created_at, finished_at`

func scanScheduleRun(s interface{ Scan(...any) error }) (ScheduleRun, error) {
	var r ScheduleRun
	var slot, retry, created, finished string
	err := s.Scan(&r.ID, &r.ScheduleID, &r.ProjectID, &slot, &r.VolumeID, &r.TaskID, &r.State, &r.Attempt, &retry, &r.Message,
		&created, &finished)
	r.Slot, r.RetryAt, r.CreatedAt, r.FinishedAt = parseOptTime(slot), parseOptTime(retry), parseTime(created), parseOptTime(finished)
	return r, err
}

func (t *Tx) InsertScheduleRun(ctx context.Context, r ScheduleRun) error {
	_, err := t.exec(ctx, `INSERT INTO schedule_runs (`+scheduleRunCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.ScheduleID, r.ProjectID, optTime(r.Slot), r.VolumeID, r.TaskID, r.State, r.Attempt, optTime(r.RetryAt), r.Message,
		FormatTime(r.CreatedAt), optTime(r.FinishedAt))
	return err
}

func (t *Tx) UpdateScheduleRun(ctx context.Context, r ScheduleRun) error {
	_, err := t.exec(ctx, `UPDATE schedule_runs SET task_id = ?, state = ?, attempt = ?, retry_at = ?, message = ?, finished_at = ?
		WHERE id = ?`, r.TaskID, r.State, r.Attempt, optTime(r.RetryAt), r.Message, optTime(r.FinishedAt), r.ID)
	return err
}

// ScheduleRunByID returns one run.
func (t *Tx) ScheduleRunByID(ctx context.Context, id string) (ScheduleRun, error) {
	return scanScheduleRun(t.queryRow(ctx, `SELECT `+scheduleRunCols+` FROM schedule_runs WHERE id = ?`, id))
}

// ScheduleRunByTask returns the run a task carries out.
func (t *Tx) ScheduleRunByTask(ctx context.Context, taskID string) (ScheduleRun, error) {
	return scanScheduleRun(t.queryRow(ctx, `SELECT `+scheduleRunCols+` FROM schedule_runs WHERE task_id = ?`, taskID))
}

// ScheduleRuns lists a schedule's runs, newest first, after the cursor
// (the created_at and id of the last one seen; empty for the first page).
func (t *Tx) ScheduleRuns(ctx context.Context, scheduleID, beforeTime, beforeID string, limit int) ([]ScheduleRun, error) {
	q := `SELECT ` + scheduleRunCols + ` FROM schedule_runs WHERE schedule_id = ?`
	args := []any{scheduleID}
	if beforeTime != "" {
		q += ` AND (created_at < ? OR (created_at = ? AND id < ?))`
		args = append(args, beforeTime, beforeTime, beforeID)
	}
	q += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	return t.scheduleRuns(ctx, q, append(args, limit)...)
}

// ScheduleRunsAt lists a schedule's runs recorded at the instant at.
func (t *Tx) ScheduleRunsAt(ctx context.Context, scheduleID string, at time.Time) ([]ScheduleRun, error) {
	return t.scheduleRuns(ctx, `SELECT `+scheduleRunCols+` FROM schedule_runs WHERE schedule_id = ? AND created_at = ? ORDER BY id`,
		scheduleID, FormatTime(at))
}

// PendingScheduleRuns lists the runs whose task has not been seen to end.
func (t *Tx) PendingScheduleRuns(ctx context.Context) ([]ScheduleRun, error) {
	return t.scheduleRuns(ctx, `SELECT `+scheduleRunCols+` FROM schedule_runs WHERE state = 'queued' ORDER BY created_at`)
}

// RetriesDue lists the failed runs waiting for a retry at or before now.
func (t *Tx) RetriesDue(ctx context.Context, now time.Time) ([]ScheduleRun, error) {
	return t.scheduleRuns(ctx, `SELECT `+scheduleRunCols+` FROM schedule_runs WHERE state = 'retrying' AND retry_at <= ?
		ORDER BY retry_at`, FormatTime(now))
}

// CountScheduleRuns counts runs by state, for metrics.
func (t *Tx) CountScheduleRuns(ctx context.Context) (map[string]int64, error) {
	rows, err := t.query(ctx, `SELECT state, COUNT(*) FROM schedule_runs GROUP BY state`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]int64{}
	for rows.Next() {
		var st string
		var n int64
		if err := rows.Scan(&st, &n); err != nil {
			return nil, err
		}
		out[st] = n
	}
	return out, rows.Err()
}

func (t *Tx) scheduleRuns(ctx context.Context, q string, args ...any) ([]ScheduleRun, error) {
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []ScheduleRun
	for rows.Next() {
		r, err := scanScheduleRun(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ScheduledSnapshots lists the ready user snapshots a schedule made of a
// volume, oldest first.
func (t *Tx) ScheduledSnapshots(ctx context.Context, volumeID, scheduleID string) ([]Snapshot, error) {
	rows, err := t.query(ctx, `SELECT `+snapshotCols+` FROM snapshots WHERE volume_id = ? AND schedule_id = ? AND kind = 'user'
		AND state = 'ready' ORDER BY created_at, seq`, volumeID, scheduleID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Snapshot
	for rows.Next() {
		sn, err := scanSnapshot(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, sn)
	}
	return out, rows.Err()
}

// TakeLease takes or renews the lease name for holder until expires, when
// it is free, expired at now, or already holder's. It reports whether
// holder has it.
func (t *Tx) TakeLease(ctx context.Context, name, holder string, now, expires time.Time) (bool, error) {
	res, err := t.exec(ctx, `UPDATE leases SET holder = ?, expires_at = ? WHERE name = ? AND (holder = ? OR expires_at < ?)`,
		holder, FormatTime(expires), name, holder, FormatTime(now))
	if err != nil {
		return false, err
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, nil
	}
	res, err = t.exec(ctx, `INSERT INTO leases (name, holder, expires_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING`,
		name, holder, FormatTime(expires))
	if err != nil {
		return false, err
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// ReleaseLease gives up holder's lease.
func (t *Tx) ReleaseLease(ctx context.Context, name, holder string) error {
	_, err := t.exec(ctx, `DELETE FROM leases WHERE name = ? AND holder = ?`, name, holder)
	return err
}
