package cli

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

// bodies records the request bodies a fake receives at one pattern and
// answers each with status and v.
type bodies struct {
	mu  sync.Mutex
	got []string
}

func (b *bodies) on(f *fakeAPI, pattern string, status int, v any) {
	f.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		b.mu.Lock()
		b.got = append(b.got, string(data))
		b.mu.Unlock()
		reply(w, status, v)
	})
}

func (b *bodies) last(t *testing.T) string {
	t.Helper()
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.got) == 0 {
		t.Fatalf("no request body received")
	}
	return b.got[len(b.got)-1]
}

var (
	db = apitypes.Volume{ID: "22222222-1111-4111-8111-111111111111", Name: "db", Project: "default", Kind: "data",
		Node: "n1", Size: 10 << 30, Format: "qcow2", State: apitypes.VolumeReady, Exports: []apitypes.Export{},
		Labels: map[string]string{"env": "prod"}}
	nextRunAt = time.Date(2025, 3, 2, 1, 30, 0, 0, time.UTC)
	nightly   = apitypes.Schedule{ID: "55555555-1111-4111-8111-111111111111", Name: "nightly", Action: apitypes.ScheduleSnapshot,
		Volumes: []string{vol1.ID, db.ID}, Selector: map[string]string{},
		Frequency: apitypes.Frequency{Kind: "daily", Time: "02:30"}, TZ: "Europe/Berlin", Keep: 7, Enabled: true,
		NextRun: &nextRunAt, CreatedAt: t0, UpdatedAt: t0}
	weeklyBackup = apitypes.Schedule{ID: "66666666-1111-4111-8111-111111111111", Name: "weekly", Action: apitypes.ScheduleBackup,
		Volumes: []string{}, Selector: map[string]string{"tier": "gold"},
		Frequency: apitypes.Frequency{Kind: "weekly", Weekday: "sun", Time: "03:00"},
		Retention: &apitypes.Retention{KeepWithin: "14d"}, Repository: "offsite", CreatedAt: t0, UpdatedAt: t0}
)

func TestScheduleCommands(t *testing.T) {
	t.Run("create sends each frequency form", func(t *testing.T) {
		tests := []struct {
			name string
			args []string
			want string // the JSON body the server receives
		}{
			{"daily snapshot of volumes",
				[]string{"--action", "snapshot", "--volumes", "web,db", "--daily", "2:30", "--tz", "Europe/Berlin", "--keep", "7"},
				`{"name": "s1", "action": "snapshot", "volumes": ["web", "db"], "frequency": {"kind": "daily", "time": "02:30"},
				  "tz": "Europe/Berlin", "keep": 7}`},
			{"weekly backup of a selector with a retention",
				[]string{"--action", "backup", "--selector", "tier=gold,env=prod", "--weekly", "Sunday 3:00",
					"--keep-daily", "7", "--keep-weekly", "4", "--keep-within", "14d", "--repository", "offsite", "--jitter", "5m"},
				`{"name": "s1", "action": "backup", "selector": {"tier": "gold", "env": "prod"},
				  "frequency": {"kind": "weekly", "weekday": "sun", "time": "03:00"},
				  "retention": {"keep_daily": 7, "keep_weekly": 4, "keep_within": "14d"}, "repository": "offsite", "jitter_seconds": 300}`},
			{"backup without retention flags sends none",
				[]string{"--action", "backup", "--volumes", "db", "--daily", "01:00"},
				`{"name": "s1", "action": "backup", "volumes": ["db"], "frequency": {"kind": "daily", "time": "01:00"}}`},
			{"monthly verify with read-data",
				[]string{"--action", "verify", "--monthly", "31 04:00", "--read-data", "10%", "--tz", "America/New_York"},
				`{"name": "s1", "action": "verify", "frequency": {"kind": "monthly", "day": 31, "time": "04:00"},
				  "tz": "America/New_York", "read_data": 10}`},
			{"read-data without %",
				[]string{"--action", "verify", "--daily", "04:00", "--read-data", "2.5"},
				`{"name": "s1", "action": "verify", "frequency": {"kind": "daily", "time": "04:00"}, "read_data": 2.5}`},
			{"cron, disabled",
				[]string{"--action", "snapshot", "--volumes", "web", "--cron", "*/15 * * * *", "--keep", "4", "--disabled"},
				`{"name": "s1", "action": "snapshot", "volumes": ["web"], "frequency": {"kind": "cron", "expr": "*/15 * * * *"},
				  "keep": 4, "disabled": true}`},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				f := newFakeAPI(t)
				var b bodies
				b.on(f, "POST /v1/schedules", 201, nightly)
				out, stderr, code := cairnAt(t, f, append([]string{"schedule", "create", "s1"}, tt.args...)...)
				if code != 0 {
					t.Fatalf("exit %d: %s", code, stderr)
				}
				sameJSON(t, b.last(t), json.RawMessage(tt.want))
				if !strings.Contains(out, "created schedule nightly") {
					t.Errorf("output %q", out)
				}
			})
		}
	})

	t.Run("create prints the schedule and its warnings", func(t *testing.T) {
		f := newFakeAPI(t)
		s := weeklyBackup
		s.Warnings = []string{"the selector tier=gold matches no volume now"}
		f.on("POST /v1/schedules", 201, s)
		out, stderr, code := cairnAt(t, f, "schedule", "create", "weekly", "--action", "backup", "--selector", "tier=gold",
			"--weekly", "sun 03:00", "-o", "json")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		sameJSON(t, out, s)
		if stderr != "warning: the selector tier=gold matches no volume now\n" {
			t.Errorf("stderr %q", stderr)
		}
		out, _, _ = cairnAt(t, f, "schedule", "create", "weekly", "--action", "backup", "--selector", "tier=gold", "--weekly", "sun 03:00")
		want := "created schedule weekly (" + s.ID + "): backup selector tier=gold, weekly sun 03:00 UTC, within 14d; disabled\n"
		if out != want {
			t.Errorf("output %q, want %q", out, want)
		}
	})

	t.Run("usage errors send nothing", func(t *testing.T) {
		base := []string{"schedule", "create", "s1", "--action", "snapshot", "--volumes", "web", "--keep", "3"}
		tests := []struct {
			name   string
			args   []string
			stderr string
		}{
			{"two frequencies", append(base, "--daily", "02:00", "--weekly", "sun 03:00"), "not --daily and --weekly"},
			{"no frequency", base, "say when the schedule runs"},
			{"bad weekly", append(base, "--weekly", "funday 03:00"), `invalid --weekly "funday 03:00"`},
			{"weekly without a time", append(base, "--weekly", "sun"), "invalid --weekly"},
			{"bad daily", append(base, "--daily", "25:00"), "invalid --daily"},
			{"bad monthly", append(base, "--monthly", "32 04:00"), "invalid --monthly"},
			{"bad cron", append(base, "--cron", "* * *"), "invalid --cron"},
			{"read-data above 100%", []string{"schedule", "create", "v", "--action", "verify", "--daily", "04:00", "--read-data", "150%"},
				`invalid --read-data "150%"`},
			{"read-data not a number", []string{"schedule", "create", "v", "--action", "verify", "--daily", "04:00", "--read-data", "lots"},
				"invalid --read-data"},
			{"bad action", []string{"schedule", "create", "s1", "--action", "copy", "--volumes", "web", "--daily", "02:00"}, "invalid --action"},
			{"no action", []string{"schedule", "create", "s1", "--volumes", "web", "--daily", "02:00"}, `"action" not set`},
			{"volumes and selector", append(base, "--daily", "02:00", "--selector", "a=b"), "not both"},
			{"bad selector", append(append([]string{}, base[:5]...), "--selector", "tier", "--daily", "02:00"), `invalid --selector "tier"`},
			{"bad keep-within", []string{"schedule", "create", "b", "--action", "backup", "--volumes", "web", "--daily", "02:00",
				"--keep-within", "soon"}, "soon"},
			{"retention keeping nothing", []string{"schedule", "create", "b", "--action", "backup", "--volumes", "web", "--daily", "02:00",
				"--keep-last", "0"}, "keep nothing"},
			{"negative jitter", append(base, "--daily", "02:00", "--jitter", "-1m"), "invalid --jitter"},
			{"update with nothing to change", []string{"schedule", "update", "nightly"}, "nothing to change"},
			{"update with two frequencies", []string{"schedule", "update", "nightly", "--cron", "@daily", "--monthly", "1 02:00"}, "not --monthly and --cron"},
			{"enable and disable", []string{"schedule", "update", "nightly", "--enable", "--disable"}, "not both"},
			{"next count 0", []string{"schedule", "next", "nightly", "--count", "0"}, "invalid --count"},
			{"label without = or -", []string{"volume", "label", "db", "tier"}, `invalid label "tier"`},
			{"label without a key", []string{"volume", "label", "db", "=gold"}, "invalid label"},
			{"label twice", []string{"volume", "label", "db", "tier=gold", "tier-"}, "twice"},
			{"label without labels", []string{"volume", "label", "db"}, "requires at least 2 arg"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				f := newFakeAPI(t)
				_, stderr, code := cairnAt(t, f, tt.args...)
				if code != 2 {
					t.Errorf("exit %d, want 2; stderr %q", code, stderr)
				}
				if !strings.Contains(stderr, tt.stderr) {
					t.Errorf("stderr %q, want it to contain %q", stderr, tt.stderr)
				}
				if len(f.got()) > 0 {
					t.Errorf("requests %v, want none", f.got())
				}
			})
		}
	})

	t.Run("server errors become exit codes", func(t *testing.T) {
		f := newFakeAPI(t)
		f.on("POST /v1/schedules", 400, apiError("invalid", "a verify schedule removes nothing: retention flags are refused"))
		f.on("GET /v1/schedules/nope", 404, apiError("not_found", `schedule "nope" not found`))
		f.on("PATCH /v1/schedules/nightly", 409, apiError("name_taken", `a schedule named "weekly" exists`))
		_, stderr, code := cairnAt(t, f, "schedule", "create", "v", "--action", "verify", "--daily", "04:00", "--keep-last", "3")
		if code != 2 || !strings.Contains(stderr, "retention flags are refused") {
			t.Errorf("400: exit %d, stderr %q", code, stderr)
		}
		_, stderr, code = cairnAt(t, f, "schedule", "show", "nope")
		if code != 3 || stderr != "cairn: schedule \"nope\" not found\n" {
			t.Errorf("404: exit %d, stderr %q", code, stderr)
		}
		_, stderr, code = cairnAt(t, f, "schedule", "update", "nightly", "--name", "weekly")
		if code != 4 || !strings.Contains(stderr, "[name_taken]") {
			t.Errorf("409: exit %d, stderr %q", code, stderr)
		}
	})

	t.Run("list resolves volume names", func(t *testing.T) {
		f := newFakeAPI(t)
		gone := nightly
		gone.Name, gone.Volumes, gone.Enabled, gone.NextRun = "old", []string{"99999999-1111-4111-8111-111111111111"}, false, nil
		pages(f, "/v1/schedules", []apitypes.Schedule{nightly}, []apitypes.Schedule{gone, weeklyBackup})
		f.on("GET /v1/volumes", 200, apitypes.List[apitypes.Volume]{Items: []apitypes.Volume{vol1, db}})
		out, stderr, code := cairnAt(t, f, "schedule", "list")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 4 {
			t.Fatalf("output:\n%s", out)
		}
		for _, want := range [][]string{
			{"NAME", "ACTION", "TARGET", "WHEN", "KEEP", "NEXT RUN", "ENABLED"},
			{"nightly", "snapshot", "web,db", "daily 02:30 Europe/Berlin", "keep 7", showTime(nextRunAt), "yes"},
			{"old", "snapshot", "99999999", "keep 7", "-", "no"},
			{"weekly", "backup", "selector tier=gold", "weekly sun 03:00 UTC", "within 14d", "no"},
		} {
			line := lines[0]
			for _, l := range lines {
				if strings.HasPrefix(l, want[0]+" ") {
					line = l
				}
			}
			for _, w := range want {
				if !strings.Contains(line, w) {
					t.Errorf("line %q lacks %q", line, w)
				}
			}
		}
		out, _, code = cairnAt(t, f, "schedule", "list", "-o", "json")
		if code != 0 {
			t.Fatalf("json: exit %d", code)
		}
		sameJSON(t, out, []apitypes.Schedule{nightly, gone, weeklyBackup})
	})

	t.Run("show", func(t *testing.T) {
		f := newFakeAPI(t)
		s := nightly
		last := time.Date(2025, 3, 1, 1, 30, 0, 0, time.UTC)
		s.LastSlot, s.JitterSeconds = &last, 300
		f.on("GET /v1/schedules/nightly", 200, s)
		f.on("GET /v1/volumes", 200, apitypes.List[apitypes.Volume]{Items: []apitypes.Volume{vol1, db}})
		out, stderr, code := cairnAt(t, f, "schedule", "show", "nightly")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		for _, want := range []string{"name:", "nightly", "target:", "web,db", "when:", "daily 02:30 Europe/Berlin", "keep 7",
			"jitter:", "up to 5m0s", "next run:  " + showTime(nextRunAt), "last slot: " + showTime(last)} {
			if !strings.Contains(out, want) {
				t.Errorf("output lacks %q:\n%s", want, out)
			}
		}
	})

	t.Run("next prints one time per line", func(t *testing.T) {
		f := newFakeAPI(t)
		runs := []string{"2025-03-30T03:00:00+02:00", "2025-03-31T02:30:00+02:00", "2025-04-01T02:30:00+02:00"}
		f.on("GET /v1/schedules/nightly/next", 200, apitypes.ScheduleNext{Schedule: "nightly", TZ: "Europe/Berlin", Runs: runs})
		out, stderr, code := cairnAt(t, f, "schedule", "next", "nightly", "--count", "3")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		if out != strings.Join(runs, "\n")+"\n" {
			t.Errorf("output %q", out)
		}
		if got := f.got(); got[0] != "GET /v1/schedules/nightly/next?count=3" {
			t.Errorf("requests %v", got)
		}
		if _, _, code := cairnAt(t, f, "schedule", "next", "nightly"); code != 0 || f.got()[1] != "GET /v1/schedules/nightly/next?count=5" {
			t.Errorf("default count: exit %d, requests %v", code, f.got())
		}
		out, _, _ = cairnAt(t, f, "schedule", "next", "nightly", "-o", "json")
		sameJSON(t, out, apitypes.ScheduleNext{Schedule: "nightly", TZ: "Europe/Berlin", Runs: runs})
	})

	preview := apitypes.RetentionPreview{Schedule: "nightly",
		Remove: []apitypes.RetentionItem{{Kind: "snapshot", ID: "77777777-1111-4111-8111-111111111111", Name: "nightly-20250301-0230",
			VolumeID: vol1.ID, Volume: "web", CreatedAt: t0}},
		Keep: []apitypes.RetentionItem{{Kind: "snapshot", ID: "88888888-1111-4111-8111-111111111111", Name: "nightly-20250302-0230",
			VolumeID: vol1.ID, Volume: "web", CreatedAt: t0.Add(24 * time.Hour)}}}

	t.Run("update sends only the flags given", func(t *testing.T) {
		f := newFakeAPI(t)
		var b bodies
		b.on(f, "PATCH /v1/schedules/nightly", 200, nightly)
		f.on("GET /v1/volumes", 200, apitypes.List[apitypes.Volume]{Items: []apitypes.Volume{vol1, db}})
		tests := []struct {
			args []string
			want string
		}{
			{[]string{"--keep", "3", "--disable"}, `{"keep": 3, "enabled": false}`},
			{[]string{"--enable", "--name", "daily", "--tz", ""}, `{"enabled": true, "name": "daily", "tz": ""}`},
			{[]string{"--weekly", "mon 01:00", "--selector", "env=prod", "--jitter", "90s"},
				`{"frequency": {"kind": "weekly", "weekday": "mon", "time": "01:00"}, "selector": {"env": "prod"}, "jitter_seconds": 90}`},
			{[]string{"--keep-last", "5", "--repository", "offsite"}, `{"retention": {"keep_last": 5}, "repository": "offsite"}`},
			{[]string{"--read-data", "0", "--volumes", "web"}, `{"read_data": 0, "volumes": ["web"]}`},
		}
		for _, tt := range tests {
			out, stderr, code := cairnAt(t, f, append([]string{"schedule", "update", "nightly"}, tt.args...)...)
			if code != 0 {
				t.Fatalf("%v: exit %d: %s", tt.args, code, stderr)
			}
			sameJSON(t, b.last(t), json.RawMessage(tt.want))
			if !strings.HasPrefix(out, "updated schedule nightly: snapshot web,db, daily 02:30 Europe/Berlin, keep 7; next run ") {
				t.Errorf("output %q", out)
			}
		}
	})

	t.Run("update --dry-run previews and changes nothing", func(t *testing.T) {
		f := newFakeAPI(t)
		var b bodies
		b.on(f, "POST /v1/schedules/nightly/retention-preview", 200, preview)
		f.mux.HandleFunc("PATCH /v1/schedules/nightly", func(w http.ResponseWriter, r *http.Request) {
			t.Errorf("--dry-run sent a PATCH")
			reply(w, 200, nightly)
		})
		out, stderr, code := cairnAt(t, f, "schedule", "update", "nightly", "--keep", "1", "--dry-run")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		sameJSON(t, b.last(t), json.RawMessage(`{"keep": 1}`))
		lines := strings.Split(out, "\n")
		if len(lines) != 5 || lines[0] != "would remove:" || !strings.HasPrefix(lines[1], "KIND") || !strings.Contains(lines[1], "NAME/ID") ||
			!strings.Contains(lines[2], "nightly-20250301-0230") || !strings.Contains(lines[2], "web") || lines[3] != "keeps 1" {
			t.Errorf("output:\n%s", out)
		}
		out, _, code = cairnAt(t, f, "schedule", "update", "nightly", "--keep", "1", "--dry-run", "-o", "json")
		if code != 0 {
			t.Fatalf("json: exit %d", code)
		}
		sameJSON(t, out, preview)
	})

	t.Run("retention-preview", func(t *testing.T) {
		f := newFakeAPI(t)
		var b bodies
		empty := apitypes.RetentionPreview{Schedule: "nightly", Remove: []apitypes.RetentionItem{}, Keep: preview.Keep}
		b.on(f, "POST /v1/schedules/nightly/retention-preview", 200, empty)
		out, stderr, code := cairnAt(t, f, "schedule", "retention-preview", "nightly")
		if code != 0 || out != "would remove: nothing\nkeeps 1\n" {
			t.Errorf("exit %d, output %q, stderr %q", code, out, stderr)
		}
		if body := b.last(t); body != "" {
			t.Errorf("body %q, want none", body)
		}
	})

	t.Run("run-now prints the runs started", func(t *testing.T) {
		f := newFakeAPI(t)
		runs := apitypes.List[apitypes.ScheduleRun]{Items: []apitypes.ScheduleRun{
			{ID: "r1", ScheduleID: nightly.ID, Slot: &t0, VolumeID: vol1.ID, TaskID: "t1", State: "queued", Attempt: 1, CreatedAt: t0},
			{ID: "r2", ScheduleID: nightly.ID, Slot: &t0, VolumeID: "99999999-1111-4111-8111-111111111111", State: "skipped", Attempt: 1,
				Message: "the volume was deleted (or is not usable): skipped", CreatedAt: t0, FinishedAt: &t0},
		}}
		f.on("POST /v1/schedules/nightly/run", 202, runs)
		f.on("GET /v1/volumes", 200, apitypes.List[apitypes.Volume]{Items: []apitypes.Volume{vol1, db}})
		out, stderr, code := cairnAt(t, f, "schedule", "run-now", "nightly")
		want := "volume web: queued, task t1\nvolume 99999999: skipped (the volume was deleted (or is not usable): skipped)\n"
		if code != 0 || out != want {
			t.Errorf("exit %d, output %q, want %q; stderr %q", code, out, want, stderr)
		}
		for _, r := range f.got() {
			if strings.HasPrefix(r, "GET /v1/tasks") {
				t.Errorf("run-now waited: %v", f.got())
			}
		}
		out, _, _ = cairnAt(t, f, "schedule", "run-now", "nightly", "-o", "json")
		sameJSON(t, out, runs.Items)
	})

	t.Run("history", func(t *testing.T) {
		f := newFakeAPI(t)
		slot := time.Date(2025, 3, 1, 1, 30, 0, 0, time.UTC)
		r1 := apitypes.ScheduleRun{ID: "r1", ScheduleID: nightly.ID, Slot: &slot, VolumeID: db.ID, TaskID: "t1", State: "succeeded", Attempt: 2,
			Message: "retention: deleting nightly-20250222-0230", CreatedAt: slot}
		r2 := apitypes.ScheduleRun{ID: "r2", ScheduleID: nightly.ID, Slot: &slot, State: "missed", Attempt: 1,
			Message: "3 slot(s) not run", CreatedAt: slot}
		pages(f, "/v1/schedules/nightly/history", []apitypes.ScheduleRun{r1}, []apitypes.ScheduleRun{r2})
		f.on("GET /v1/volumes", 200, apitypes.List[apitypes.Volume]{Items: []apitypes.Volume{vol1, db}})
		out, stderr, code := cairnAt(t, f, "schedule", "history", "nightly")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 3 || strings.Join(strings.Fields(lines[0]), " ") != "SLOT VOLUME STATE ATTEMPT TASK MESSAGE" {
			t.Fatalf("output:\n%s", out)
		}
		for i, want := range [][]string{{showTime(slot), "db", "succeeded", "2", "t1", "retention: deleting"}, {"-", "missed", "1", "3 slot(s) not run"}} {
			for _, w := range want {
				if !strings.Contains(lines[i+1], w) {
					t.Errorf("line %q lacks %q", lines[i+1], w)
				}
			}
		}
		out, _, _ = cairnAt(t, f, "schedule", "history", "nightly", "-o", "json")
		sameJSON(t, out, []apitypes.ScheduleRun{r1, r2})
	})

	t.Run("delete", func(t *testing.T) {
		f := newFakeAPI(t)
		f.on("DELETE /v1/schedules/nightly", 204, nil)
		out, stderr, code := cairnAt(t, f, "schedules", "delete", "nightly")
		if code != 0 || out != "deleted schedule nightly (what it made stays)\n" {
			t.Errorf("exit %d, output %q, stderr %q", code, out, stderr)
		}
		if out, _, code := cairnAt(t, f, "schedule", "rm", "nightly", "-o", "json"); code != 0 || out != "" {
			t.Errorf("json: exit %d, output %q", code, out)
		}
	})

	t.Run("volume label sets and removes", func(t *testing.T) {
		f := newFakeAPI(t)
		var b bodies
		labelled := db
		labelled.Labels = map[string]string{"tier": "gold"}
		b.on(f, "PATCH /v1/volumes/db/labels", 200, labelled)
		out, stderr, code := cairnAt(t, f, "volume", "label", "db", "tier=gold", "env-")
		if code != 0 {
			t.Fatalf("exit %d: %s", code, stderr)
		}
		sameJSON(t, b.last(t), json.RawMessage(`{"labels": {"tier": "gold", "env": null}}`))
		if out != "volume db labels: tier=gold\n" {
			t.Errorf("output %q", out)
		}
		out, _, code = cairnAt(t, f, "volume", "label", "db", "note=a=b", "x-y=", "-o", "json")
		if code != 0 {
			t.Fatalf("json: exit %d", code)
		}
		sameJSON(t, b.last(t), json.RawMessage(`{"labels": {"note": "a=b", "x-y": ""}}`))
		sameJSON(t, out, labelled)
	})
}
