package schedule

import (
	"fmt"
	"testing"
	"time"
)

func TestDue(t *testing.T) {
	cases := []struct {
		name          string
		f             Frequency
		zone          string
		created, last string // "" = zero
		now           string
		grace         time.Duration
		wantSlot      string // "" = no slot
		wantRun       bool
		wantMissed    int
	}{
		{"nothing due yet", daily("02:00"), zUTC, "", "2026-01-01T02:00:00Z", "2026-01-01T20:00:00Z", DefaultGrace, "", false, 0},
		{"on time", daily("02:00"), zUTC, "", "2026-01-01T02:00:00Z", "2026-01-02T02:00:00Z", DefaultGrace, "2026-01-02T02:00:00Z", true, 0},
		{"down across one slot, within grace", daily("02:00"), zUTC, "", "2026-01-01T02:00:00Z", "2026-01-02T05:00:00Z", DefaultGrace, "2026-01-02T02:00:00Z", true, 0},
		{"exactly grace old", daily("02:00"), zUTC, "", "2026-01-01T02:00:00Z", "2026-01-02T08:00:00Z", DefaultGrace, "2026-01-02T02:00:00Z", true, 0},
		{"1s older than grace", daily("02:00"), zUTC, "", "2026-01-01T02:00:00Z", "2026-01-02T08:00:01Z", DefaultGrace, "2026-01-02T02:00:00Z", false, 1},
		{"several slots within grace: latest runs", cron("*/15 * * * *"), zUTC, "", "2026-01-01T10:00:00Z", "2026-01-01T11:05:00Z", DefaultGrace, "2026-01-01T11:00:00Z", true, 3},
		{"several days down, latest within grace", daily("02:00"), zUTC, "", "2026-01-01T02:00:00Z", "2026-01-05T03:00:00Z", DefaultGrace, "2026-01-05T02:00:00Z", true, 3},
		{"all slots older than grace", daily("02:00"), zUTC, "", "2026-01-01T02:00:00Z", "2026-01-05T12:00:00Z", DefaultGrace, "2026-01-05T02:00:00Z", false, 4},
		{"last slot equal to now", daily("02:00"), zUTC, "", "2026-01-02T02:00:00Z", "2026-01-02T02:00:00Z", DefaultGrace, "", false, 0},
		{"last slot after now (clock skew)", daily("02:00"), zUTC, "", "2026-01-03T02:00:00Z", "2026-01-02T02:00:00Z", DefaultGrace, "", false, 0},
		{"slot exactly now", cron("*/15 * * * *"), zUTC, "", "2026-01-01T10:00:00Z", "2026-01-01T10:15:00Z", DefaultGrace, "2026-01-01T10:15:00Z", true, 0},
		{"never run: created before a slot", daily("02:00"), zUTC, "2026-01-01T12:00:00Z", "", "2026-01-02T03:00:00Z", DefaultGrace, "2026-01-02T02:00:00Z", true, 0},
		{"never run: created after today's slot", daily("02:00"), zUTC, "2026-01-02T02:30:00Z", "", "2026-01-02T03:00:00Z", DefaultGrace, "", false, 0},
		{"never run: created exactly at a slot", daily("02:00"), zUTC, "2026-01-02T02:00:00Z", "", "2026-01-02T03:00:00Z", DefaultGrace, "", false, 0},
		{"never run: created long ago", daily("02:00"), zUTC, "2025-01-01T12:00:00Z", "", "2026-01-01T03:00:00Z", DefaultGrace, "2026-01-01T02:00:00Z", true, 364},
		{"LastSlot wins over Created", daily("02:00"), zUTC, "2025-01-01T12:00:00Z", "2025-12-31T02:00:00Z", "2026-01-01T03:00:00Z", DefaultGrace, "2026-01-01T02:00:00Z", true, 0},
		{"zero grace, late", daily("02:00"), zUTC, "", "2026-01-01T02:00:00Z", "2026-01-02T02:00:01Z", 0, "2026-01-02T02:00:00Z", false, 1},
		{"zero grace, on time", daily("02:00"), zUTC, "", "2026-01-01T02:00:00Z", "2026-01-02T02:00:00Z", 0, "2026-01-02T02:00:00Z", true, 0},
		{"monthly, down two months", monthly(31, "04:00"), zUTC, "", "2027-01-31T04:00:00Z", "2027-03-31T06:00:00Z", DefaultGrace, "2027-03-31T04:00:00Z", true, 1},
		{"in a gap", daily("02:30"), zNewYork, "", "2026-03-07T02:30:00-05:00", "2026-03-08T03:30:00-04:00", DefaultGrace, "2026-03-08T03:00:00-04:00", true, 0},
		{"in the repeated hour: no second run", daily("01:30"), zNewYork, "", "2026-11-01T01:30:00-04:00", "2026-11-01T01:45:00-05:00", DefaultGrace, "", false, 0},
		{"every 15 min down a year", cron("*/15 * * * *"), zBerlin, "", "2026-01-01T00:00:00+01:00", "2027-01-01T00:05:00+01:00", time.Hour, "2027-01-01T00:00:00+01:00", true,
			365*96 - 4 - 1}, // 02:00-02:45 of the spring gap collapse into 03:00; one runs
		{"every minute down two years: count saturates", cron("* * * * *"), zUTC, "", "2024-01-01T00:00:00Z", "2026-01-01T00:00:30Z", DefaultGrace, "2026-01-01T00:00:00Z", true, missedCountLimit},
		{"sparse cron", cron("0 0 29 2 *"), zUTC, "2026-01-01T00:00:00Z", "", "2030-01-01T00:00:00Z", DefaultGrace, "2028-02-29T00:00:00Z", false, 1},
	}
	for _, c := range cases {
		loc := zone(t, c.zone)
		var st State
		if c.created != "" {
			st.Created = instant(t, c.created)
		}
		if c.last != "" {
			st.LastSlot = instant(t, c.last)
		}
		d, err := Due(c.f, loc, st, instant(t, c.now), c.grace)
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		var slot string
		if !d.Slot.IsZero() {
			slot = d.Slot.Format(time.RFC3339)
		}
		if slot != c.wantSlot || d.Run != c.wantRun || d.Missed != c.wantMissed {
			t.Errorf("%s: got slot %q run %v missed %d; want slot %q run %v missed %d",
				c.name, slot, d.Run, d.Missed, c.wantSlot, c.wantRun, c.wantMissed)
		}
	}
}

func TestDueErrors(t *testing.T) {
	now := instant(t, "2026-01-01T00:00:00Z")
	_, err := Due(daily("02:00"), time.UTC, State{}, now, DefaultGrace)
	wantErr(t, "empty state", err, "neither a last slot nor a creation time")
	_, err = Due(daily("02:00"), time.UTC, State{Created: now}, now, -time.Second)
	wantErr(t, "negative grace", err, "negative grace")
	_, err = Due(daily("25:00"), time.UTC, State{Created: now}, now, DefaultGrace)
	wantErr(t, "bad frequency", err, "HH:MM")
}

// A scheduler ticking every minute (with downtime) runs each slot at most
// once, never in a burst, and every slot is either run or counted missed.
func TestDueSimulatedClock(t *testing.T) {
	loc := zone(t, zNewYork)
	r := compile(t, cron("*/20 0-3 * * *"))
	st := State{Created: instant(t, "2026-10-31T00:00:00-04:00")}
	end := instant(t, "2026-11-02T00:00:00-05:00")
	all, _ := r.NextN(loc, st.Created, 100)
	var expected int
	for _, s := range all {
		if !s.After(end) {
			expected++
		}
	}
	// Down from 00:30 to 02:50 local on 1 Nov, across both passes of 01:xx.
	downFrom, downTo := instant(t, "2026-11-01T00:30:00-04:00"), instant(t, "2026-11-01T02:50:00-05:00")
	down := func(at time.Time) bool { return at.After(downFrom) && at.Before(downTo) }
	runs, missed := 0, 0
	var prevRun time.Time
	for now := st.Created; !now.After(end); now = now.Add(time.Minute) {
		if down(now) {
			continue
		}
		d, err := r.Due(loc, st, now, 30*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if d.Slot.IsZero() {
			continue
		}
		missed += d.Missed
		if d.Run {
			if !d.Slot.After(prevRun) {
				t.Fatalf("slot %s run twice", d.Slot)
			}
			runs++
			prevRun = d.Slot
		}
		st.LastSlot = d.Slot
	}
	if runs+missed != expected {
		t.Errorf("runs %d + missed %d != %d slots", runs, missed, expected)
	}
	if missed == 0 || runs == 0 {
		t.Errorf("runs %d, missed %d: the downtime should cause both", runs, missed)
	}
}

func TestJitter(t *testing.T) {
	const max = 10 * time.Minute
	seen := map[time.Duration]bool{}
	var sum time.Duration
	for i := 0; i < 1000; i++ {
		id := fmt.Sprintf("sched-%d", i)
		j := Jitter(id, max)
		if j < 0 || j >= max {
			t.Fatalf("Jitter(%q) = %v, out of [0, %v)", id, j, max)
		}
		if Jitter(id, max) != j {
			t.Fatalf("Jitter(%q) is not stable", id)
		}
		seen[j] = true
		sum += j
	}
	if len(seen) < 990 {
		t.Errorf("only %d distinct jitters for 1000 ids", len(seen))
	}
	if mean := sum / 1000; mean < 4*time.Minute || mean > 6*time.Minute {
		t.Errorf("mean jitter %v, want about 5m", mean)
	}
	if Jitter("x", 0) != 0 || Jitter("x", -time.Second) != 0 || Jitter("x", 1) != 0 {
		t.Error("Jitter with max <= 1ns must be 0")
	}
	// Pinned: a schedule must keep its offset across versions.
	pinned := map[string]string{
		"":                                     "9m41.633026203s",
		"daily-db":                             "27m59.158235455s",
		"7f3c1a2e-4b5d-4e6f-8a9b-0c1d2e3f4a5b": "55m10.30811914s",
	}
	for id, want := range pinned {
		if got := Jitter(id, time.Hour).String(); got != want {
			t.Errorf("Jitter(%q, 1h) = %s, want %s (the hash must not change)", id, got, want)
		}
	}
}
