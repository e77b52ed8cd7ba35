package service

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
	"github.com/cairn-backup/cairn/internal/retention"
	"github.com/cairn-backup/cairn/internal/schedule"
)

// Schedules: the resource (create, list, update, delete, next, history,
// retention preview) and volume labels, which selectors match. The
// scheduler that runs them is in scheduler.go.

const (
	maxJitter             = time.Hour
	defaultBackupWithin   = "14d"
	maxScheduleVolumes    = 1000
	scheduleHistoryLimit  = 100
	scheduleNextMaxCount  = 100
	labelValueMaxLen      = 63
	scheduleRunMaxMessage = 1024
)

var labelKeyRE = regexp.MustCompile(`^[a-z0-9]([a-z0-9._/-]{0,61}[a-z0-9])?$`)

// checkLabels refuses label keys and values a selector could not name.
func checkLabels(m map[string]string) error {
	for k, v := range m {
		if !labelKeyRE.MatchString(k) {
			return core.Invalid("label key %q: use 1-63 characters a-z, 0-9, '.', '_', '/', '-', starting and ending with a letter or digit", k)
		}
		if len(v) > labelValueMaxLen || strings.ContainsAny(v, "=,\n\x00") {
			return core.Invalid("label %s: the value %q is too long or holds '=', ',' or a control character", k, v)
		}
	}
	return nil
}

// matches reports whether labels hold every pair of sel.
func matches(labels, sel map[string]string) bool {
	for k, v := range sel {
		if got, ok := labels[k]; !ok || got != v {
			return false
		}
	}
	return true
}

func toFrequency(f apitypes.Frequency) schedule.Frequency {
	return schedule.Frequency{Kind: f.Kind, Time: f.Time, Weekday: f.Weekday, Day: f.Day, Expr: f.Expr}
}

func fromFrequency(f schedule.Frequency) apitypes.Frequency {
	return apitypes.Frequency{Kind: f.Kind, Time: f.Time, Weekday: f.Weekday, Day: f.Day, Expr: f.Expr}
}

// compiled is a schedule's rule and zone.
type compiled struct {
	rule schedule.Rule
	loc  *time.Location
}

func compileSchedule(x meta.Schedule) (compiled, error) {
	var f schedule.Frequency
	if err := json.Unmarshal(x.Frequency, &f); err != nil {
		return compiled{}, fmt.Errorf("schedule %s: frequency: %w", x.Name, err)
	}
	rule, err := f.Compile()
	if err != nil {
		return compiled{}, err
	}
	loc, err := schedule.LoadZone(x.TZ)
	if err != nil {
		return compiled{}, err
	}
	return compiled{rule: rule, loc: loc}, nil
}

// policyOf turns a backup schedule's retention into a policy.
func policyOf(r apitypes.Retention) (retention.Policy, error) {
	pol := retention.Policy{Last: r.KeepLast, Hourly: r.KeepHourly, Daily: r.KeepDaily, Weekly: r.KeepWeekly,
		Monthly: r.KeepMonthly, Yearly: r.KeepYearly}
	if err := pol.Check(); err != nil {
		return pol, err
	}
	if r.KeepWithin != "" {
		d, err := retention.ParseDuration(r.KeepWithin)
		if err != nil {
			return pol, err
		}
		pol.Within = d
	}
	if pol.Empty() {
		return pol, core.Invalid("the retention keeps nothing: give keep_last, keep_daily, ... or keep_within")
	}
	return pol, nil
}

func scheduleRetention(x meta.Schedule) (apitypes.Retention, error) {
	var r apitypes.Retention
	if len(x.Retention) == 0 {
		return r, nil
	}
	err := json.Unmarshal(x.Retention, &r)
	return r, err
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func (s *Service) scheduleJSON(ctx context.Context, tx *meta.Tx, x meta.Schedule) apitypes.Schedule {
	return s.scheduleJSONNamed(ctx, tx, x, map[string]string{})
}

// scheduleJSONNamed is scheduleJSON with repository names looked up once
// per id in repos (shared across a page).
func (s *Service) scheduleJSONNamed(ctx context.Context, tx *meta.Tx, x meta.Schedule, repos map[string]string) apitypes.Schedule {
	tz := x.TZ
	if tz == "" {
		tz = "UTC"
	}
	out := apitypes.Schedule{ID: x.ID, Name: x.Name, Action: x.Action, Volumes: x.VolumeIDs, Selector: x.Selector, TZ: tz,
		Keep: x.Keep, ReadData: x.ReadData, Enabled: x.Enabled, JitterSeconds: x.JitterS, NextRun: timePtr(x.NextRun),
		LastSlot: timePtr(x.LastSlot), CreatedAt: x.CreatedAt, UpdatedAt: x.UpdatedAt}
	var f schedule.Frequency
	_ = json.Unmarshal(x.Frequency, &f)
	out.Frequency = fromFrequency(f)
	if x.Action == apitypes.ScheduleBackup {
		if r, err := scheduleRetention(x); err == nil {
			out.Retention = &r
		}
	}
	if x.RepositoryID != "" {
		name, ok := repos[x.RepositoryID]
		if !ok {
			if r, err := tx.RepositoryByID(ctx, x.ProjectID, x.RepositoryID); err == nil {
				name = r.Name
			}
			repos[x.RepositoryID] = name
		}
		out.Repository = name
	}
	if !x.Enabled {
		out.NextRun = nil
	}
	return out
}

// scheduleByRef finds a schedule of the caller's project by name or id.
func scheduleByRef(ctx context.Context, tx *meta.Tx, c Caller, ref string) (meta.Schedule, error) {
	x, err := tx.ScheduleByName(ctx, c.ProjectID, ref)
	if meta.IsNoRows(err) && core.IsUUID(ref) {
		x, err = tx.ScheduleByID(ctx, c.ProjectID, ref)
	}
	if meta.IsNoRows(err) {
		return x, core.NotFound("schedule %q not found", ref)
	}
	return x, err
}

// scheduleSettings are the parts of a schedule a create or update sets.
type scheduleSettings struct {
	volumes    []string // refs
	selector   map[string]string
	frequency  apitypes.Frequency
	tz         string
	keep       int
	retention  *apitypes.Retention
	repository string
	readData   float64
	jitter     int
	// keepVolumes keeps volumes (ids) as stored, even of volumes gone
	// since; keepRepository keeps that repository id, ready or not.
	keepVolumes    bool
	keepRepository string
}

// applySettings validates st for x's action and writes it into x; it
// returns warnings (a selector matching nothing now).
func (s *Service) applySettings(ctx context.Context, tx *meta.Tx, c Caller, x *meta.Schedule, st scheduleSettings) ([]string, error) {
	var warnings []string
	switch x.Action {
	case apitypes.ScheduleSnapshot, apitypes.ScheduleBackup, apitypes.ScheduleVerify:
	default:
		return nil, core.Invalid("unknown action %q: snapshot, backup or verify", x.Action)
	}
	if err := core.CheckName("schedule", x.Name); err != nil {
		return nil, err
	}
	f, err := toFrequency(st.frequency).Normalize()
	if err != nil {
		return nil, core.Invalid("%v", err)
	}
	if x.Frequency, err = json.Marshal(f); err != nil {
		return nil, err
	}
	if _, err := schedule.LoadZone(st.tz); err != nil {
		return nil, core.Invalid("%v", err)
	}
	x.TZ = st.tz
	if st.jitter < 0 || time.Duration(st.jitter)*time.Second > maxJitter {
		return nil, core.Invalid("jitter %ds: want 0 to %d seconds", st.jitter, int(maxJitter.Seconds()))
	}
	x.JitterS = st.jitter
	if len(st.volumes) > 0 && len(st.selector) > 0 {
		return nil, core.Invalid("give volumes or a selector, not both")
	}
	if len(st.volumes) > maxScheduleVolumes {
		return nil, core.Invalid("%d volumes: at most %d per schedule (use a selector)", len(st.volumes), maxScheduleVolumes)
	}
	if len(st.volumes) == 0 && len(st.selector) == 0 && x.Action != apitypes.ScheduleVerify {
		return nil, core.Invalid("a %s schedule needs volumes or a selector", x.Action)
	}
	if err := checkLabels(st.selector); err != nil {
		return nil, err
	}
	x.VolumeIDs, x.Selector = []string{}, map[string]string{}
	for _, ref := range st.volumes {
		if st.keepVolumes {
			x.VolumeIDs = append(x.VolumeIDs, ref) // as stored: ids
			continue
		}
		v, err := volumeByRef(ctx, tx, c, ref)
		if err != nil {
			return nil, err
		}
		x.VolumeIDs = append(x.VolumeIDs, v.ID)
	}
	for k, v := range st.selector {
		x.Selector[k] = v
	}
	if len(st.selector) > 0 {
		vs, err := s.selectVolumes(ctx, tx, x.ProjectID, st.selector)
		if err != nil {
			return nil, err
		}
		if len(vs) == 0 {
			warnings = append(warnings, fmt.Sprintf("the selector %s matches no volume now: the schedule runs on nothing until one is labelled so", selectorString(st.selector)))
		}
	}
	x.Keep, x.Retention, x.RepositoryID, x.ReadData = 0, nil, "", 0
	switch x.Action {
	case apitypes.ScheduleSnapshot:
		if st.retention != nil || st.repository != "" || st.readData != 0 {
			return nil, core.Invalid("a snapshot schedule keeps a count of snapshots (keep): retention flags, a repository and read_data belong to backup and verify schedules")
		}
		if st.keep <= 0 {
			return nil, core.Invalid("keep %d: a snapshot schedule keeps at least 1 of its snapshots per volume", st.keep)
		}
		x.Keep = st.keep
	case apitypes.ScheduleBackup:
		if st.keep != 0 || st.readData != 0 {
			return nil, core.Invalid("a backup schedule keeps backups by its retention (keep_last, keep_daily, ... keep_within), not keep; read_data belongs to verify")
		}
		ret := apitypes.Retention{KeepWithin: defaultBackupWithin}
		if st.retention != nil {
			ret = *st.retention
		}
		if _, err := policyOf(ret); err != nil {
			return nil, err
		}
		if x.Retention, err = json.Marshal(ret); err != nil {
			return nil, err
		}
	case apitypes.ScheduleVerify:
		if st.keep != 0 || st.retention != nil {
			return nil, core.Invalid("a verify schedule removes nothing: retention flags are refused")
		}
		if st.readData < 0 || st.readData > 100 {
			return nil, core.Invalid("read_data %v%%: want 0 to 100", st.readData)
		}
		if st.readData != 0 && (len(st.volumes) > 0 || len(st.selector) > 0) {
			return nil, core.Invalid("read_data applies to a verify of the whole repository: a verify of volumes re-reads all their backups' data")
		}
		x.ReadData = st.readData
	}
	if x.Action != apitypes.ScheduleSnapshot && st.keepRepository != "" {
		x.RepositoryID = st.keepRepository
	} else if x.Action != apitypes.ScheduleSnapshot {
		r, err := backupRepository(ctx, tx, c, st.repository)
		if err != nil {
			return nil, err
		}
		x.RepositoryID = r.ID
	}
	return warnings, nil
}

func selectorString(sel map[string]string) string {
	var parts []string
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// selectVolumes lists a project's live volumes whose labels hold sel.
func (s *Service) selectVolumes(ctx context.Context, tx *meta.Tx, projectID string, sel map[string]string) ([]meta.Volume, error) {
	var out []meta.Volume
	afterName, afterID := "", ""
	for {
		vs, err := tx.Volumes(ctx, projectID, afterName, afterID, 1000)
		if err != nil {
			return nil, err
		}
		for _, v := range vs {
			if matches(v.Labels, sel) && liveVolume(v) == nil {
				out = append(out, v)
			}
		}
		if len(vs) < 1000 {
			return out, nil
		}
		afterName, afterID = vs[len(vs)-1].Name, vs[len(vs)-1].ID
	}
}

// planNext sets when the scheduler looks at x next: its first slot after
// after, plus its jitter; never when disabled.
func planNext(x *meta.Schedule, after time.Time) error {
	x.NextRun = time.Time{}
	if !x.Enabled {
		return nil
	}
	cs, err := compileSchedule(*x)
	if err != nil {
		return err
	}
	next, err := cs.rule.Next(cs.loc, after)
	if err != nil {
		return core.Invalid("%v", err)
	}
	x.NextRun = next.Add(schedule.Jitter(x.ID, time.Duration(x.JitterS)*time.Second)).UTC()
	return nil
}

// CreateSchedule makes a schedule; it first runs at its next slot.
func (s *Service) CreateSchedule(ctx context.Context, c Caller, req apitypes.ScheduleCreate) (apitypes.Schedule, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Schedule{}, err
	}
	var out apitypes.Schedule
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		now := s.now()
		x := meta.Schedule{ID: core.NewID(), ProjectID: c.ProjectID, Name: req.Name, Action: req.Action, Enabled: !req.Disabled,
			CreatedAt: now, UpdatedAt: now}
		warnings, err := s.applySettings(ctx, tx, c, &x, scheduleSettings{volumes: req.Volumes, selector: req.Selector,
			frequency: req.Frequency, tz: req.TZ, keep: req.Keep, retention: req.Retention, repository: req.Repository,
			readData: req.ReadData, jitter: req.JitterSeconds})
		if err != nil {
			return err
		}
		if _, err := tx.ScheduleByName(ctx, c.ProjectID, x.Name); err == nil {
			return core.Conflict("name_taken", "a schedule named %q exists", x.Name)
		}
		if err := planNext(&x, now); err != nil {
			return err
		}
		if err := tx.InsertSchedule(ctx, x); err != nil {
			return err
		}
		out = s.scheduleJSON(ctx, tx, x)
		out.Warnings = warnings
		return nil
	})
	if err == nil {
		s.scheduleChanged()
	}
	return out, err
}

// ListSchedules lists the project's schedules by name.
func (s *Service) ListSchedules(ctx context.Context, c Caller, pg Page) (apitypes.List[apitypes.Schedule], error) {
	if err := c.requireUser(); err != nil {
		return apitypes.List[apitypes.Schedule]{}, err
	}
	var out apitypes.List[apitypes.Schedule]
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		xs, err := tx.Schedules(ctx, c.ProjectID, pg.Cursor, pg.Limit+1)
		if err != nil {
			return err
		}
		repos := map[string]string{}
		out = pageOf(xs, pg.Limit, func(x meta.Schedule) apitypes.Schedule {
			return s.scheduleJSONNamed(ctx, tx, x, repos)
		}, func(x meta.Schedule) string { return x.Name })
		return nil
	})
	return out, err
}

// GetSchedule returns one schedule.
func (s *Service) GetSchedule(ctx context.Context, c Caller, ref string) (apitypes.Schedule, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.Schedule{}, err
	}
	var out apitypes.Schedule
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		x, err := scheduleByRef(ctx, tx, c, ref)
		if err == nil {
			out = s.scheduleJSON(ctx, tx, x)
		}
		return err
	})
	return out, err
}

// UpdateSchedule changes a schedule. A new frequency, zone or enabling
// takes effect from now: slots before are not run. Renaming changes
// nothing else: what it made stays its own.
func (s *Service) UpdateSchedule(ctx context.Context, c Caller, ref string, req apitypes.ScheduleUpdate) (apitypes.Schedule, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Schedule{}, err
	}
	out, _, err := s.updateSchedule(ctx, c, ref, req, false)
	return out, err
}

// RetentionPreview lists exactly what the schedule's retention would
// remove now, with the changes in req (nil: as it is); nothing is stored.
func (s *Service) RetentionPreview(ctx context.Context, c Caller, ref string, req *apitypes.ScheduleUpdate) (apitypes.RetentionPreview, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.RetentionPreview{}, err
	}
	if req == nil {
		req = &apitypes.ScheduleUpdate{}
	}
	_, p, err := s.updateSchedule(ctx, c, ref, *req, true)
	if err != nil {
		return apitypes.RetentionPreview{}, err
	}
	return *p, nil
}

// updateSchedule applies req; with dryRun it stores nothing and returns
// the retention preview of the changed schedule.
func (s *Service) updateSchedule(ctx context.Context, c Caller, ref string, req apitypes.ScheduleUpdate, dryRun bool) (apitypes.Schedule, *apitypes.RetentionPreview, error) {
	var out apitypes.Schedule
	var preview *apitypes.RetentionPreview
	errDryRun := fmt.Errorf("dry run")
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		x, err := scheduleByRef(ctx, tx, c, ref)
		if err != nil {
			return err
		}
		cur := s.scheduleJSON(ctx, tx, x)
		st := scheduleSettings{volumes: x.VolumeIDs, selector: x.Selector, frequency: cur.Frequency, tz: x.TZ, keep: x.Keep,
			retention: cur.Retention, repository: cur.Repository, readData: x.ReadData, jitter: x.JitterS,
			keepVolumes: len(x.VolumeIDs) > 0, keepRepository: x.RepositoryID}
		retimed := false
		if req.Name != nil && *req.Name != x.Name {
			if _, err := tx.ScheduleByName(ctx, c.ProjectID, *req.Name); err == nil {
				return core.Conflict("name_taken", "a schedule named %q exists", *req.Name)
			}
			x.Name = *req.Name
		}
		if req.Volumes != nil && req.Selector != nil {
			return core.Invalid("give volumes or a selector, not both")
		}
		if req.Volumes != nil {
			st.volumes, st.selector, st.keepVolumes = req.Volumes, nil, false
		}
		if req.Selector != nil {
			st.selector, st.volumes, st.keepVolumes = req.Selector, nil, false
		}
		if req.Frequency != nil {
			st.frequency, retimed = *req.Frequency, true
		}
		if req.TZ != nil {
			st.tz, retimed = *req.TZ, true
		}
		if req.Keep != nil {
			st.keep = *req.Keep
		}
		if req.Retention != nil {
			st.retention = req.Retention
		}
		if req.Repository != nil {
			st.repository, st.keepRepository = *req.Repository, ""
		}
		if req.ReadData != nil {
			st.readData = *req.ReadData
		}
		if req.JitterSeconds != nil {
			st.jitter, retimed = *req.JitterSeconds, true
		}
		if req.Enabled != nil && *req.Enabled != x.Enabled {
			x.Enabled, retimed = *req.Enabled, true
		}
		warnings, err := s.applySettings(ctx, tx, c, &x, st)
		if err != nil {
			return err
		}
		now := s.now()
		if retimed {
			x.LastSlot = now // from now on: no slot before the change runs late
			if err := planNext(&x, now); err != nil {
				return err
			}
		}
		x.UpdatedAt = now
		if dryRun {
			p, err := s.retentionPreview(ctx, tx, x)
			if err != nil {
				return err
			}
			preview = &p
			out = s.scheduleJSON(ctx, tx, x)
			return errDryRun // roll back
		}
		if err := tx.UpdateSchedule(ctx, x); err != nil {
			return err
		}
		out = s.scheduleJSON(ctx, tx, x)
		out.Warnings = warnings
		return nil
	})
	if err == errDryRun {
		return out, preview, nil
	}
	if err == nil {
		s.scheduleChanged()
	}
	return out, nil, err
}

// DeleteSchedule removes a schedule and its history. What it made stays,
// as if made by hand: no retention removes it any more.
func (s *Service) DeleteSchedule(ctx context.Context, c Caller, ref string) error {
	if err := c.requireWrite(); err != nil {
		return err
	}
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		x, err := scheduleByRef(ctx, tx, c, ref)
		if err != nil {
			return err
		}
		return tx.DeleteSchedule(ctx, x.ID)
	})
	if err == nil {
		s.scheduleChanged()
	}
	return err
}

// NextRuns lists a schedule's next count run times, in its zone (jitter
// included).
func (s *Service) NextRuns(ctx context.Context, c Caller, ref string, count int) (apitypes.ScheduleNext, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.ScheduleNext{}, err
	}
	if count < 1 || count > scheduleNextMaxCount {
		return apitypes.ScheduleNext{}, core.Invalid("count %d: want 1 to %d", count, scheduleNextMaxCount)
	}
	var x meta.Schedule
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		var err error
		x, err = scheduleByRef(ctx, tx, c, ref)
		return err
	})
	if err != nil {
		return apitypes.ScheduleNext{}, err
	}
	cs, err := compileSchedule(x)
	if err != nil {
		return apitypes.ScheduleNext{}, err
	}
	out := apitypes.ScheduleNext{Schedule: x.Name, TZ: cs.loc.String(), Runs: []string{}}
	if !x.Enabled {
		return out, nil
	}
	ts, err := cs.rule.NextN(cs.loc, s.now(), count)
	if err != nil {
		return out, core.Invalid("%v", err)
	}
	jitter := schedule.Jitter(x.ID, time.Duration(x.JitterS)*time.Second)
	for _, t := range ts {
		out.Runs = append(out.Runs, t.Add(jitter).In(cs.loc).Format(time.RFC3339))
	}
	return out, nil
}

func scheduleRunJSON(r meta.ScheduleRun) apitypes.ScheduleRun {
	return apitypes.ScheduleRun{ID: r.ID, ScheduleID: r.ScheduleID, Slot: timePtr(r.Slot), VolumeID: r.VolumeID, TaskID: r.TaskID,
		State: r.State, Attempt: r.Attempt, RetryAt: timePtr(r.RetryAt), Message: r.Message, CreatedAt: r.CreatedAt,
		FinishedAt: timePtr(r.FinishedAt)}
}

// ScheduleHistory lists a schedule's runs, newest first.
func (s *Service) ScheduleHistory(ctx context.Context, c Caller, ref string, pg Page) (apitypes.List[apitypes.ScheduleRun], error) {
	if err := c.requireUser(); err != nil {
		return apitypes.List[apitypes.ScheduleRun]{}, err
	}
	var out apitypes.List[apitypes.ScheduleRun]
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		x, err := scheduleByRef(ctx, tx, c, ref)
		if err != nil {
			return err
		}
		before, beforeID, _ := strings.Cut(pg.Cursor, "|")
		rs, err := tx.ScheduleRuns(ctx, x.ID, before, beforeID, pg.Limit+1)
		if err != nil {
			return err
		}
		out = pageOf(rs, pg.Limit, scheduleRunJSON, func(r meta.ScheduleRun) string { return meta.FormatTime(r.CreatedAt) + "|" + r.ID })
		return nil
	})
	return out, err
}

// targets lists the live volumes a schedule runs on now; gone lists the
// ids of named volumes that no longer exist or are not live.
func (s *Service) targets(ctx context.Context, tx *meta.Tx, x meta.Schedule) (vols []meta.Volume, gone []string, err error) {
	if len(x.Selector) > 0 {
		vols, err = s.selectVolumes(ctx, tx, x.ProjectID, x.Selector)
		return vols, nil, err
	}
	for _, id := range x.VolumeIDs {
		v, err := tx.VolumeByID(ctx, id)
		if meta.IsNoRows(err) || (err == nil && (v.ProjectID != x.ProjectID || liveVolume(v) != nil)) {
			gone = append(gone, id)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		vols = append(vols, v)
	}
	return vols, gone, nil
}

// retentionPreview is what x's retention removes now, volume by volume.
func (s *Service) retentionPreview(ctx context.Context, tx *meta.Tx, x meta.Schedule) (apitypes.RetentionPreview, error) {
	out := apitypes.RetentionPreview{Schedule: x.Name, Remove: []apitypes.RetentionItem{}, Keep: []apitypes.RetentionItem{}}
	vols, _, err := s.targets(ctx, tx, x)
	if err != nil {
		return out, err
	}
	for _, v := range vols {
		remove, keep, err := s.retentionOf(ctx, tx, x, v)
		if err != nil {
			return out, err
		}
		out.Remove = append(out.Remove, remove...)
		out.Keep = append(out.Keep, keep...)
	}
	return out, nil
}

// retentionOf splits what schedule x made of volume v into what its
// retention removes and what it keeps.
func (s *Service) retentionOf(ctx context.Context, tx *meta.Tx, x meta.Schedule, v meta.Volume) (remove, keep []apitypes.RetentionItem, err error) {
	switch x.Action {
	case apitypes.ScheduleSnapshot:
		ss, err := tx.ScheduledSnapshots(ctx, v.ID, x.ID)
		if err != nil {
			return nil, nil, err
		}
		for i, sn := range ss {
			it := apitypes.RetentionItem{Kind: "snapshot", ID: sn.ID, Name: sn.Name, VolumeID: v.ID, Volume: v.Name, CreatedAt: sn.CreatedAt}
			if i < len(ss)-x.Keep {
				remove = append(remove, it)
			} else {
				keep = append(keep, it)
			}
		}
	case apitypes.ScheduleBackup:
		ret, err := scheduleRetention(x)
		if err != nil {
			return nil, nil, err
		}
		pol, err := policyOf(ret)
		if err != nil {
			return nil, nil, err
		}
		r, err := tx.RepositoryByID(ctx, x.ProjectID, x.RepositoryID)
		if err != nil {
			return nil, nil, err
		}
		forget, kept, _, err := s.forgetDecision(ctx, tx, v, r, pol, func(b meta.Backup) bool { return b.ScheduleID == x.ID })
		if err != nil {
			return nil, nil, err
		}
		item := func(id string) (apitypes.RetentionItem, error) {
			b, err := tx.BackupByID(ctx, x.ProjectID, id)
			return apitypes.RetentionItem{Kind: "backup", ID: id, VolumeID: v.ID, Volume: v.Name, CreatedAt: b.CreatedAt}, err
		}
		for _, id := range forget {
			it, err := item(id)
			if err != nil {
				return nil, nil, err
			}
			remove = append(remove, it)
		}
		for _, id := range kept {
			it, err := item(id)
			if err != nil {
				return nil, nil, err
			}
			keep = append(keep, it)
		}
	}
	return remove, keep, nil
}

// LabelVolume sets (a value) or removes (null) labels of a volume.
func (s *Service) LabelVolume(ctx context.Context, c Caller, ref string, req apitypes.VolumeLabels) (apitypes.Volume, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Volume{}, err
	}
	set := map[string]string{}
	for k, v := range req.Labels {
		if v != nil {
			set[k] = *v
		} else if !labelKeyRE.MatchString(k) {
			return apitypes.Volume{}, core.Invalid("label key %q is not a valid key", k)
		}
	}
	if err := checkLabels(set); err != nil {
		return apitypes.Volume{}, err
	}
	var id string
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		v, err := volumeByRef(ctx, tx, c, ref)
		if err != nil {
			return err
		}
		if v.Labels == nil {
			v.Labels = map[string]string{}
		}
		for k, val := range req.Labels {
			if val == nil {
				delete(v.Labels, k)
			} else {
				v.Labels[k] = *val
			}
		}
		if len(v.Labels) > 64 {
			return core.Invalid("at most 64 labels per volume")
		}
		v.UpdatedAt = s.now()
		id = v.ID
		return tx.UpdateVolume(ctx, v)
	})
	if err != nil {
		return apitypes.Volume{}, err
	}
	return s.GetVolume(ctx, c, id)
}
