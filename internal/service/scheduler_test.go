package service

import (
	"context"
	"fmt"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
	"github.com/cairn-backup/cairn/internal/meta/sqlite"
)

// A simulated clock: the scheduler tests drive time, nothing sleeps.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) set(t time.Time)     { c.mu.Lock(); c.t = t; c.mu.Unlock() }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }
func mustTime(t *testing.T, s string) time.Time {
	t.Helper()
	x, err := time.Parse(time.RFC3339, s)
	if err != nil {
		t.Fatal(err)
	}
	return x.UTC()
}

type schedEnv struct {
	t     *testing.T
	s     *Service
	admin Caller
	node  Caller
	clk   *fakeClock
	ctx   context.Context
}

func newSchedEnv(t *testing.T, start string) *schedEnv {
	s, admin, node := newTestService(t)
	clk := &fakeClock{t: mustTime(t, start)}
	s.now = clk.now
	return &schedEnv{t: t, s: s, admin: admin, node: node, clk: clk, ctx: context.Background()}
}

// tick runs one scheduler round as holder "a".
func (e *schedEnv) tick() {
	e.t.Helper()
	if ok, err := e.s.SchedulerTick(e.ctx, "a"); err != nil || !ok {
		e.t.Fatalf("tick: leader %v, %v", ok, err)
	}
}

// drain plays the node: every claimable task succeeds (or fails, when
// fail says so), until none is left.
func (e *schedEnv) drain(fail func(*apitypes.NodeTask) bool) {
	e.t.Helper()
	for {
		nt, err := e.s.Claim(e.ctx, e.node, 0)
		if err != nil {
			e.t.Fatal(err)
		}
		if nt == nil {
			return
		}
		res := apitypes.NodeComplete{Size: 1 << 20}
		if fail != nil && fail(nt) {
			res = apitypes.NodeComplete{Error: "the disk is on fire", ErrorCode: "node_error"}
		}
		if nt.Task.Kind == apitypes.OpSnapshotCreate {
			res.SnapshotSizes = map[string]int64{nt.Plan.Tag: 1 << 20}
		}
		if err := e.s.Complete(e.ctx, e.node, nt.Task.ID, res); err != nil {
			e.t.Fatal(err)
		}
	}
}

// settle runs the scheduler and the node until nothing moves.
func (e *schedEnv) settle() {
	e.t.Helper()
	for range 4 {
		e.tick()
		e.drain(nil)
	}
}

func (e *schedEnv) volume(name string) apitypes.Volume {
	e.t.Helper()
	v, err := e.s.CreateVolume(e.ctx, e.admin, apitypes.VolumeCreate{Name: name, Size: 1 << 20})
	if err != nil {
		e.t.Fatal(err)
	}
	e.drain(nil)
	out, err := e.s.GetVolume(e.ctx, e.admin, v.ResourceID)
	if err != nil {
		e.t.Fatal(err)
	}
	return out
}

// must returns v, or ends the test by panicking with err (the call
// site is in the trace).
func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

// snapshots lists a volume's ready snapshot names, oldest first.
func (e *schedEnv) snapshots(vol string) []string {
	e.t.Helper()
	l := must(e.s.ListSnapshots(e.ctx, e.admin, vol, Page{Limit: 1000}))
	var out []string
	for _, s := range l.Items {
		if s.State == apitypes.SnapshotReady {
			out = append(out, s.Name)
		}
	}
	return out
}

func (e *schedEnv) history(sched string) []apitypes.ScheduleRun {
	e.t.Helper()
	return must(e.s.ScheduleHistory(e.ctx, e.admin, sched, Page{Limit: 1000})).Items
}

func states(runs []apitypes.ScheduleRun) string {
	var out []string
	for i := len(runs) - 1; i >= 0; i-- { // oldest first
		out = append(out, runs[i].State)
	}
	return strings.Join(out, " ")
}

func daily(at string) apitypes.Frequency { return apitypes.Frequency{Kind: "daily", Time: at} }

// TestSchedulerDailyRunsAndRetention: a daily snapshot schedule runs once
// per slot, keeps its N newest snapshots, and never touches a manual one;
// a second schedule on the same volume keeps its own.
func TestSchedulerDailyRunsAndRetention(t *testing.T) {
	e := newSchedEnv(t, "2026-03-01T00:00:00Z")
	e.volume("db")
	if _, err := e.s.CreateSnapshot(e.ctx, e.admin, "db", apitypes.SnapshotCreate{Name: "manual"}); err != nil {
		t.Fatal(err)
	}
	e.drain(nil)
	must(e.s.CreateSchedule(e.ctx, e.admin, apitypes.ScheduleCreate{Name: "nightly", Action: "snapshot",
		Volumes: []string{"db"}, Frequency: daily("02:30"), Keep: 3}))
	must(e.s.CreateSchedule(e.ctx, e.admin, apitypes.ScheduleCreate{Name: "weekly", Action: "snapshot",
		Volumes: []string{"db"}, Frequency: apitypes.Frequency{Kind: "weekly", Weekday: "sun", Time: "03:00"}, Keep: 1}))
	// Nothing before the first slot.
	e.clk.set(mustTime(t, "2026-03-01T02:29:59Z"))
	e.settle()
	if got := e.snapshots("db"); len(got) != 1 {
		t.Fatalf("before the slot: %v", got)
	}
	// Ten days, ticking every 10 minutes.
	for e.clk.now().Before(mustTime(t, "2026-03-11T00:00:00Z")) {
		e.clk.add(10 * time.Minute)
		e.settle()
	}
	var nightly, weekly []string
	for _, n := range e.snapshots("db") {
		switch {
		case strings.HasPrefix(n, "nightly-"):
			nightly = append(nightly, n)
		case strings.HasPrefix(n, "weekly-"):
			weekly = append(weekly, n)
		case n != "manual":
			t.Fatalf("unexpected snapshot %s", n)
		}
	}
	if len(nightly) != 3 || len(weekly) != 1 || !strings.Contains(strings.Join(e.snapshots("db"), " "), "manual") {
		t.Fatalf("after ten days: %v", e.snapshots("db"))
	}
	// The newest three nights: Mar 8, 9, 10 at 02:30 UTC.
	sort.Strings(nightly)
	if !strings.HasPrefix(nightly[0], "nightly-20260308-0230") || !strings.HasPrefix(nightly[2], "nightly-20260310-0230") {
		t.Fatalf("nightly kept %v", nightly)
	}
	if !strings.HasPrefix(weekly[0], "weekly-20260308-0300") {
		t.Fatalf("weekly kept %v", weekly)
	}
	h := e.history("nightly")
	if len(h) != 10 || strings.Count(states(h), "succeeded") != 10 {
		t.Fatalf("nightly history: %s", states(h))
	}
	// Rename: what it made stays its own; the next run's retention counts it.
	newName := "every-night"
	if _, err := e.s.UpdateSchedule(e.ctx, e.admin, "nightly", apitypes.ScheduleUpdate{Name: &newName}); err != nil {
		t.Fatal(err)
	}
	e.clk.set(mustTime(t, "2026-03-11T02:30:00Z"))
	e.settle()
	var kept []string
	for _, n := range e.snapshots("db") {
		if strings.HasPrefix(n, "nightly-") || strings.HasPrefix(n, "every-night-") {
			kept = append(kept, n)
		}
	}
	sort.Strings(kept)
	if len(kept) != 3 || !strings.HasPrefix(kept[0], "every-night-") || !strings.HasPrefix(kept[1], "nightly-20260309") {
		t.Fatalf("after a rename and a run: %v", kept)
	}
	// The preview shows what a smaller keep would remove, and changes nothing.
	one := 1
	p, err := e.s.RetentionPreview(e.ctx, e.admin, "every-night", &apitypes.ScheduleUpdate{Keep: &one})
	if err != nil || len(p.Remove) != 2 || len(p.Keep) != 1 || p.Remove[0].Name != kept[1] {
		t.Fatalf("dry-run preview: %+v %v", p, err)
	}
	if x := must(e.s.GetSchedule(e.ctx, e.admin, "every-night")); x.Keep != 3 {
		t.Fatalf("a dry run changed keep to %d", x.Keep)
	}
}

// TestSchedulerDowntime: a server down across slots runs the latest one
// once if it is within the grace window, records the rest as missed, and
// never bursts.
func TestSchedulerDowntime(t *testing.T) {
	e := newSchedEnv(t, "2026-05-01T00:00:00Z")
	e.volume("db")
	must(e.s.CreateSchedule(e.ctx, e.admin, apitypes.ScheduleCreate{Name: "hourly", Action: "snapshot",
		Volumes: []string{"db"}, Frequency: apitypes.Frequency{Kind: "cron", Expr: "0 * * * *"}, Keep: 100}))
	e.clk.set(mustTime(t, "2026-05-01T01:00:00Z"))
	e.settle()
	// Down from 01:00:30 to 05:20: slots 02:00 .. 05:00; only 05:00 runs.
	e.clk.set(mustTime(t, "2026-05-01T05:20:00Z"))
	e.settle()
	h := e.history("hourly")
	if states(h) != "succeeded missed succeeded" || !strings.Contains(h[1].Message, "3 slot(s)") {
		t.Fatalf("after 4 missed hours: %s / %+v", states(h), h)
	}
	if got := e.snapshots("db"); len(got) != 2 {
		t.Fatalf("snapshots: %v", got)
	}
	// Down for longer than the grace window (6 h): nothing runs late.
	e.clk.set(mustTime(t, "2026-05-01T05:59:00Z"))
	e.settle()
	e.s.cfg.ScheduleGrace = 30 * time.Minute
	e.clk.set(mustTime(t, "2026-05-01T09:45:00Z")) // 09:00 is 45 min old
	e.settle()
	if states(e.history("hourly")) != "succeeded missed succeeded missed" || len(e.snapshots("db")) != 2 {
		t.Fatalf("beyond the grace window: %s, %v", states(e.history("hourly")), e.snapshots("db"))
	}
	next := must(e.s.NextRuns(e.ctx, e.admin, "hourly", 2))
	if strings.Join(next.Runs, " ") != "2026-05-01T10:00:00Z 2026-05-01T11:00:00Z" {
		t.Fatalf("next runs: %v", next.Runs)
	}
}

// TestSchedulerDST: a daily 02:30 in New York runs at 03:00 EDT on the day
// the clocks spring forward, and once on the day they fall back.
func TestSchedulerDST(t *testing.T) {
	e := newSchedEnv(t, "2026-03-07T12:00:00Z")
	e.volume("db")
	must(e.s.CreateSchedule(e.ctx, e.admin, apitypes.ScheduleCreate{Name: "ny", Action: "snapshot",
		Volumes: []string{"db"}, Frequency: daily("02:30"), TZ: "America/New_York", Keep: 100}))
	next := must(e.s.NextRuns(e.ctx, e.admin, "ny", 2))
	if strings.Join(next.Runs, " ") != "2026-03-08T03:00:00-04:00 2026-03-09T02:30:00-04:00" {
		t.Fatalf("across spring forward: %v", next.Runs)
	}
	e.clk.set(mustTime(t, "2026-10-31T12:00:00Z"))
	tz := "America/New_York"
	if _, err := e.s.UpdateSchedule(e.ctx, e.admin, "ny", apitypes.ScheduleUpdate{TZ: &tz, Frequency: &apitypes.Frequency{Kind: "daily", Time: "01:30"}}); err != nil {
		t.Fatal(err)
	}
	for e.clk.now().Before(mustTime(t, "2026-11-02T12:00:00Z")) {
		e.clk.add(5 * time.Minute)
		e.settle()
	}
	var slots []string
	for _, r := range e.history("ny") {
		slots = append(slots, r.Slot.Format(time.RFC3339))
	}
	sort.Strings(slots)
	// Nov 1 01:30 happens twice (EDT, then EST): it runs once, at the first.
	if strings.Join(slots, " ") != "2026-11-01T05:30:00Z 2026-11-02T06:30:00Z" {
		t.Fatalf("across fall back: %v", slots)
	}
}

// TestSchedulerSnapshotLimit: at the volume's snapshot limit the schedule
// first deletes its own oldest snapshot; with none of its own it fails
// clearly and is retried.
func TestSchedulerSnapshotLimit(t *testing.T) {
	e := newSchedEnv(t, "2026-06-01T00:00:00Z")
	e.s.cfg.MaxSnapshotsPerVolume = 3
	e.volume("db")
	for _, n := range []string{"m1", "m2"} {
		must(e.s.CreateSnapshot(e.ctx, e.admin, "db", apitypes.SnapshotCreate{Name: n}))
	}
	e.drain(nil)
	must(e.s.CreateSchedule(e.ctx, e.admin, apitypes.ScheduleCreate{Name: "s", Action: "snapshot",
		Volumes: []string{"db"}, Frequency: apitypes.Frequency{Kind: "cron", Expr: "*/10 * * * *"}, Keep: 5}))
	for range 3 {
		e.clk.add(10 * time.Minute)
		e.settle()
	}
	got := e.snapshots("db")
	if len(got) != 3 || got[0] != "m1" || got[1] != "m2" || !strings.HasPrefix(got[2], "s-20260601-0030") {
		t.Fatalf("at the limit: %v", got)
	}
	// A manual snapshot fills the last place the schedule's took: the
	// schedule's own goes first... and with none of its own left, it fails.
	must(e.s.DeleteSnapshot(e.ctx, e.admin, "db", got[2], false))
	e.drain(nil)
	must(e.s.CreateSnapshot(e.ctx, e.admin, "db", apitypes.SnapshotCreate{Name: "m3"}))
	e.drain(nil)
	e.clk.add(10 * time.Minute)
	e.settle()
	h := e.history("s")
	if h[0].State != RunRetrying || !strings.Contains(h[0].Message, "limit_reached") && !strings.Contains(h[0].Message, "the most allowed") {
		t.Fatalf("at the limit with none of its own: %+v", h[0])
	}
}

// TestSchedulerRetryAndDeletedVolume: a failing run is retried after a
// backoff and given up after three attempts; a deleted volume is skipped
// and recorded; a selector matching nothing is recorded too.
func TestSchedulerRetryAndDeletedVolume(t *testing.T) {
	e := newSchedEnv(t, "2026-07-01T00:00:00Z")
	e.volume("a")
	e.volume("b")
	must(e.s.CreateSchedule(e.ctx, e.admin, apitypes.ScheduleCreate{Name: "s", Action: "snapshot",
		Volumes: []string{"a", "b"}, Frequency: daily("01:00"), Keep: 2}))
	e.clk.set(mustTime(t, "2026-07-01T01:00:00Z"))
	e.tick()
	failA := func(nt *apitypes.NodeTask) bool {
		return nt.Task.VolumeID != "" && nt.Plan.VolumeID == mustVolID(e, "a")
	}
	e.drain(failA)
	e.tick()
	e.clk.add(time.Minute)
	e.tick() // the retry
	e.drain(failA)
	e.tick()
	e.clk.add(5 * time.Minute)
	e.tick()
	e.drain(failA)
	e.tick()
	var a, b apitypes.ScheduleRun
	for _, r := range e.history("s") {
		if r.VolumeID == mustVolID(e, "a") {
			a = r
		} else {
			b = r
		}
	}
	if a.State != RunFailed || a.Attempt != 3 || !strings.Contains(a.Message, "on fire") || b.State != RunSucceeded {
		t.Fatalf("runs: a %+v, b %+v", a, b)
	}
	// Volume b deleted: the next run skips it and says so.
	must(e.s.DeleteVolume(e.ctx, e.admin, "b", true))
	e.drain(nil)
	e.clk.set(mustTime(t, "2026-07-02T01:00:00Z"))
	e.settle()
	found := false
	for _, r := range e.history("s") {
		found = found || (r.State == RunSkipped && strings.Contains(r.Message, "deleted"))
	}
	if !found {
		t.Fatalf("no skipped run for the deleted volume: %s", states(e.history("s")))
	}
	// A selector that matches nothing is warned about at create.
	x := must(e.s.CreateSchedule(e.ctx, e.admin, apitypes.ScheduleCreate{Name: "sel", Action: "snapshot",
		Selector: map[string]string{"tier": "gold"}, Frequency: daily("01:00"), Keep: 2}))
	if len(x.Warnings) != 1 || !strings.Contains(x.Warnings[0], "matches no volume") {
		t.Fatalf("warnings: %v", x.Warnings)
	}
	// Labelling a volume brings it in at the next run.
	gold := "gold"
	must(e.s.LabelVolume(e.ctx, e.admin, "a", apitypes.VolumeLabels{Labels: map[string]*string{"tier": &gold}}))
	e.clk.set(mustTime(t, "2026-07-03T01:00:00Z"))
	e.settle()
	if h := e.history("sel"); len(h) == 0 || h[0].State != RunSucceeded || h[0].VolumeID != mustVolID(e, "a") {
		t.Fatalf("selector runs: %+v", h)
	}
}

func mustVolID(e *schedEnv, name string) string {
	v, err := e.s.GetVolume(e.ctx, e.admin, name)
	if err != nil {
		return ""
	}
	return v.ID
}

// TestSchedulerTwoInstances: two schedulers on one store, sharing a clock
// and ticking in turn (and racing): every slot fires exactly once.
func TestSchedulerTwoInstances(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	db1, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db1.Close()
	db2, err := sqlite.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	clk := &fakeClock{t: mustTime(t, "2026-08-01T00:00:00Z")}
	s1, s2 := New(db1, Config{NodeTimeout: time.Hour}), New(db2, Config{NodeTimeout: time.Hour})
	s1.now, s2.now = clk.now, clk.now
	secret, err := s1.Bootstrap(ctx)
	if err != nil {
		t.Fatal(err)
	}
	admin, _ := s1.Authenticate(ctx, secret, "")
	_, nodeSecret, _ := s1.EnsureLocalNode(ctx, "local")
	node, _ := s1.Authenticate(ctx, nodeSecret, "")
	s1.RegisterNode(ctx, node, apitypes.NodeRegister{})
	e := &schedEnv{t: t, s: s1, admin: admin, node: node, clk: clk, ctx: ctx}
	e.volume("db")
	must(s1.CreateSchedule(ctx, admin, apitypes.ScheduleCreate{Name: "q", Action: "snapshot",
		Volumes: []string{"db"}, Frequency: apitypes.Frequency{Kind: "cron", Expr: "*/15 * * * *"}, Keep: 1000}))
	for range 40 {
		clk.add(5 * time.Minute)
		var wg sync.WaitGroup
		for _, s := range []*Service{s1, s2} {
			for _, holder := range []string{"one", "two"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					_, _ = s.SchedulerTick(ctx, holder)
				}()
			}
		}
		wg.Wait()
		e.drain(nil)
		// The lease holder stops ticking now and then: the other takes
		// over once the lease expires.
		if clk.now().Minute() == 0 {
			clk.add(leaseTTL + time.Second)
			_, _ = s2.SchedulerTick(ctx, "two")
			e.drain(nil)
		}
	}
	h := e.history("q")
	slots := map[string]int{}
	for _, r := range h {
		if r.State == RunMissed {
			continue
		}
		slots[r.Slot.Format(time.RFC3339)]++
	}
	for slot, n := range slots {
		if n != 1 {
			t.Fatalf("slot %s ran %d times", slot, n)
		}
	}
	if len(slots) < 13 {
		t.Fatalf("only %d slots ran in 200+ minutes of */15: %v", len(slots), slots)
	}
}

// TestScheduleBadInput: clear errors for what a schedule cannot be.
func TestScheduleBadInput(t *testing.T) {
	e := newSchedEnv(t, "2026-01-01T00:00:00Z")
	e.volume("db")
	other := must(e.s.CreateProject(e.ctx, e.admin, apitypes.ProjectCreate{Name: "other"}))
	oc := Caller{Role: apitypes.RoleAdmin, ProjectID: other.ID, ProjectName: "other"}
	base := apitypes.ScheduleCreate{Name: "s", Action: "snapshot", Volumes: []string{"db"}, Frequency: daily("02:00"), Keep: 1}
	for _, tc := range []struct {
		name string
		mod  func(*apitypes.ScheduleCreate)
		c    Caller
		kind core.Kind
		msg  string
	}{
		{"bad cron", func(r *apitypes.ScheduleCreate) { r.Frequency = apitypes.Frequency{Kind: "cron", Expr: "61 * * * *"} }, e.admin, core.KindInvalid, "minute"},
		{"never", func(r *apitypes.ScheduleCreate) { r.Frequency = apitypes.Frequency{Kind: "cron", Expr: "0 0 30 2 *"} }, e.admin, core.KindInvalid, "never"},
		{"bad zone", func(r *apitypes.ScheduleCreate) { r.TZ = "Mars/Olympus" }, e.admin, core.KindInvalid, "Mars/Olympus"},
		{"keep 0", func(r *apitypes.ScheduleCreate) { r.Keep = 0 }, e.admin, core.KindInvalid, "keep"},
		{"keep -1", func(r *apitypes.ScheduleCreate) { r.Keep = -1 }, e.admin, core.KindInvalid, "keep"},
		{"unknown action", func(r *apitypes.ScheduleCreate) { r.Action = "defrag" }, e.admin, core.KindInvalid, "unknown action"},
		{"another project's volume", func(r *apitypes.ScheduleCreate) {}, oc, core.KindNotFound, "db"},
		{"retention on verify", func(r *apitypes.ScheduleCreate) {
			r.Action, r.Keep, r.Retention = "verify", 0, &apitypes.Retention{KeepLast: 3}
		}, e.admin, core.KindInvalid, "retention"},
		{"volumes and selector", func(r *apitypes.ScheduleCreate) { r.Selector = map[string]string{"a": "b"} }, e.admin, core.KindInvalid, "not both"},
		{"bad name", func(r *apitypes.ScheduleCreate) { r.Name = "-x" }, e.admin, core.KindInvalid, "name"},
		{"bad time", func(r *apitypes.ScheduleCreate) { r.Frequency = daily("25:00") }, e.admin, core.KindInvalid, "25:00"},
	} {
		req := base
		tc.mod(&req)
		_, err := e.s.CreateSchedule(e.ctx, tc.c, req)
		if core.KindOf(err) != tc.kind || err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %v (kind %v), want %v containing %q", tc.name, err, core.KindOf(err), tc.kind, tc.msg)
		}
	}
	must(e.s.CreateSchedule(e.ctx, e.admin, base))
	if _, err := e.s.CreateSchedule(e.ctx, e.admin, base); core.KindOf(err) != core.KindConflict {
		t.Errorf("a second schedule of the same name: %v", err)
	}
	if _, err := e.s.GetSchedule(e.ctx, oc, "s"); core.KindOf(err) != core.KindNotFound {
		t.Errorf("another project's schedule: %v", err)
	}
	if _, err := e.s.NextRuns(e.ctx, e.admin, "s", 0); core.KindOf(err) != core.KindInvalid {
		t.Errorf("next --count 0: %v", err)
	}
	_ = fmt.Sprint
	_ = meta.FormatTime
}

// TestSchedulerSameSlotOneVolume: two schedules with the same slot on one
// volume both run: the second run's task queues behind the first.
func TestSchedulerSameSlotOneVolume(t *testing.T) {
	e := newSchedEnv(t, "2026-09-01T00:00:00Z")
	e.volume("db")
	for _, n := range []string{"a", "b"} {
		must(e.s.CreateSchedule(e.ctx, e.admin, apitypes.ScheduleCreate{Name: n, Action: "snapshot",
			Volumes: []string{"db"}, Frequency: daily("04:00"), Keep: 5}))
	}
	e.clk.set(mustTime(t, "2026-09-01T04:00:00Z"))
	e.tick()
	first, err := e.s.Claim(e.ctx, e.node, 0)
	if err != nil || first == nil {
		t.Fatalf("claim: %v %v", first, err)
	}
	if second, _ := e.s.Claim(e.ctx, e.node, 0); second != nil {
		t.Fatalf("a second task on the volume ran alongside the first: %s", second.Task.Kind)
	}
	if err := e.s.Complete(e.ctx, e.node, first.Task.ID, apitypes.NodeComplete{Size: 1 << 20}); err != nil {
		t.Fatal(err)
	}
	e.settle()
	for _, n := range []string{"a", "b"} {
		if h := e.history(n); len(h) != 1 || h[0].State != RunSucceeded {
			t.Fatalf("schedule %s: %+v", n, h)
		}
	}
	if got := e.snapshots("db"); len(got) != 2 || got[0] == got[1] {
		t.Fatalf("snapshots: %v", got)
	}
}
