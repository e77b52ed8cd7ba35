package e2e

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

// TestScheduleEveryMinute runs a real server with a cron schedule firing
// every minute on the real clock: its first slot runs once, on time, and
// makes one snapshot named after the slot; `next`, `history` and the
// retention preview agree.
func TestScheduleEveryMinute(t *testing.T) {
	srv := startServer(t, serverOpts{})
	c := srv.Client(t)
	ctx := testCtx(t)
	waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "db", Size: 4 << 20}))
	cliOK(t, srv, "snapshot", "create", "db", "--name", "by-hand")
	cliOK(t, srv, "volume", "label", "db", "tier=gold")

	var x apitypes.Schedule
	cliJSON(t, srv, &x, "schedule", "create", "minutely", "--action", "snapshot", "--selector", "tier=gold",
		"--cron", "* * * * *", "--keep", "1")
	if x.NextRun == nil || x.NextRun.Second() != 0 || x.Selector["tier"] != "gold" {
		t.Fatalf("created: %+v", x)
	}
	next := strings.Fields(cliOK(t, srv, "schedule", "next", "minutely", "--count", "2"))
	if len(next) != 2 {
		t.Fatalf("next: %v", next)
	}
	first, _ := time.Parse(time.RFC3339, next[0])
	if !first.Equal(*x.NextRun) {
		t.Fatalf("next %v, schedule's next_run %v", next, x.NextRun)
	}

	// Wait for the first slot's run to finish.
	var runs []apitypes.ScheduleRun
	deadline := time.Now().Add(90 * time.Second)
	for time.Now().Before(deadline) {
		cliJSON(t, srv, &runs, "schedule", "history", "minutely")
		if len(runs) > 0 && runs[len(runs)-1].State != "queued" {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(runs) == 0 {
		t.Fatal("the schedule did not run within 90 s")
	}
	r := runs[len(runs)-1]
	if r.State != "succeeded" || r.Slot == nil || !r.Slot.Equal(first) || r.CreatedAt.Sub(*r.Slot) > 2*time.Second {
		t.Fatalf("first run: %+v (slot %v)", r, first)
	}
	for _, o := range runs {
		if o.Slot != nil && o.Slot.Equal(first) && o.ID != r.ID {
			t.Fatalf("slot %v ran twice: %+v", first, runs)
		}
	}
	var snaps []apitypes.Snapshot
	cliJSON(t, srv, &snaps, "snapshot", "list", "db")
	want := "minutely-" + first.UTC().Format("20060102-1504")
	names := []string{}
	for _, s := range snaps {
		names = append(names, s.Name)
	}
	if len(snaps) < 2 || !strings.Contains(strings.Join(names, " "), want) || !strings.Contains(strings.Join(names, " "), "by-hand") {
		t.Fatalf("snapshots: %v, want by-hand and %s", names, want)
	}
	// The run is counted in /metrics.
	mresp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	mb, _ := io.ReadAll(mresp.Body)
	mresp.Body.Close()
	if !strings.Contains(string(mb), `cairn_schedule_runs{state="succeeded"} 1`) {
		t.Fatalf("/metrics lacks the succeeded run:\n%s", mb)
	}
	// The manual snapshot is never the retention's.
	var p apitypes.RetentionPreview
	cliJSON(t, srv, &p, "schedule", "retention-preview", "minutely")
	for _, it := range append(p.Remove, p.Keep...) {
		if it.Name == "by-hand" {
			t.Fatalf("a manual snapshot in the retention preview: %+v", p)
		}
	}
	cliOK(t, srv, "schedule", "delete", "minutely")
	if _, _, code := cli(t, srv, "schedule", "show", "minutely"); code != 3 {
		t.Fatalf("show after delete: exit %d", code)
	}
}
