package schedule

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// The property tests compare Next with brute-force references that share
// nothing with it but the cron field masks: they step through real instants
// with the time package and watch the wall clock.

// refWall returns the wall clock of t in loc as wall seconds.
func refWall(t time.Time, loc *time.Location) int64 {
	_, off := t.In(loc).Zone()
	return t.Unix() + int64(off)
}

// offsetCache answers wall-clock questions for instants stepped forward in
// order, asking the zone only when a zone period ends.
type offsetCache struct {
	loc      *time.Location
	off, end int64
	valid    bool
}

func (c *offsetCache) wall(sec int64) int64 {
	if !c.valid || (c.end != 0 && sec >= c.end) {
		t := time.Unix(sec, 0).In(c.loc)
		_, off := t.Zone()
		_, end := t.ZoneBounds()
		c.off, c.end, c.valid = int64(off), 0, true
		if !end.IsZero() {
			c.end = end.Unix()
		}
	}
	return sec + c.off
}

// refCron lists the runs of s in (from, to], from and to whole minutes: an
// instant runs when some matching wall minute lies in (the latest wall time
// shown before it, its own wall time]. That is each wall minute at its first
// occurrence, and skipped minutes at the end of their gap, collapsed.
func refCron(s *cronSpec, loc *time.Location, from, to time.Time) []time.Time {
	matches := func(w int64) bool {
		mi, h := int(w/60%60), int(w/3600%24)
		if s.minute&(1<<mi) == 0 || s.hour&(1<<h) == 0 {
			return false
		}
		d := time.Unix(w, 0).UTC()
		_, month, day := d.Date()
		if s.month&(1<<int(month)) == 0 {
			return false
		}
		domOK := s.dom&(1<<day) != 0
		dowOK := s.dow&(1<<int(d.Weekday())) != 0
		if s.domStar || s.dowStar {
			return domOK && dowOK
		}
		return domOK || dowOK
	}
	var seen int64 = -1 << 62 // latest wall clock shown so far
	for t := from.Add(-48 * time.Hour); !t.After(from); t = t.Add(time.Minute) {
		seen = max(seen, refWall(t, loc))
	}
	oc := offsetCache{loc: loc}
	var out []time.Time
	for sec := from.Unix() + 60; sec <= to.Unix(); sec += 60 {
		w := oc.wall(sec)
		if w <= seen {
			continue // the clock shows this minute for the second time
		}
		for m := seen - seen%60 + 60; m <= w; m += 60 {
			if matches(m) {
				out = append(out, time.Unix(sec, 0).In(loc))
				break
			}
		}
		seen = w
	}
	return out
}

// refResolve finds the first instant whose wall clock in loc reaches the
// given local date and time, stepping minute by minute from three hours
// before time.Date's (possibly wrong) answer.
func refResolve(loc *time.Location, y int, m time.Month, d, hh, mm int) time.Time {
	want := time.Date(y, m, d, hh, mm, 0, 0, time.UTC).Unix()
	t := time.Date(y, m, d, hh, mm, 0, 0, loc).Add(-3 * time.Hour)
	for refWall(t, loc) < want {
		t = t.Add(time.Minute)
	}
	return t
}

// refDays lists the runs of a daily, weekly or monthly frequency in
// (from, to] by walking calendar days.
func refDays(f Frequency, loc *time.Location, from, to time.Time) []time.Time {
	var hh, mm int
	fmt.Sscanf(f.Time, "%d:%d", &hh, &mm)
	var out []time.Time
	start := from.In(loc).AddDate(0, 0, -2)
	for i := 0; ; i++ {
		day := time.Date(start.Year(), start.Month(), start.Day()+i, 12, 0, 0, 0, time.UTC)
		fires := false
		switch f.Kind {
		case KindDaily:
			fires = true
		case KindWeekly:
			fires = weekdayNames[day.Weekday()] == f.Weekday
		case KindMonthly:
			last := time.Date(day.Year(), day.Month()+1, 0, 12, 0, 0, 0, time.UTC).Day()
			fires = day.Day() == min(f.Day, last)
		}
		if !fires {
			continue
		}
		t := refResolve(loc, day.Year(), day.Month(), day.Day(), hh, mm)
		if t.After(to) {
			return out
		}
		if t.After(from) && (len(out) == 0 || t.After(out[len(out)-1])) {
			out = append(out, t)
		}
	}
}

var propertyFrequencies = []Frequency{
	daily("00:00"), daily("01:30"), daily("02:00"), daily("02:30"), daily("03:00"), daily("23:59"),
	weekly("sun", "02:30"), weekly("sat", "01:45"), weekly("wed", "12:00"),
	monthly(31, "02:30"), monthly(29, "00:00"), monthly(1, "02:00"), monthly(15, "03:15"),
	cron("*/15 * * * *"), cron("0 2 * * *"), cron("30 2 * * *"), cron("*/7 1-3 * * *"),
	cron("0 0 29 2 *"), cron("5 4 1,15 * fri"), cron("0 */6 * * mon-fri"), cron("45 1 * 3,4,10,11 0"),
	cron("0,30 0-4 31 * *"), cron("59 23 * * 7"), cron("0 0 */10 * mon"),
}

// TestNextNMatchesReference checks three years of runs, strictly
// increasing, for every frequency above in every test zone.
func TestNextNMatchesReference(t *testing.T) {
	from := instant(t, "2025-06-01T00:00:00Z")
	to := instant(t, "2028-06-01T00:00:00Z")
	for _, z := range allZones {
		t.Run(z, func(t *testing.T) {
			t.Parallel()
			loc := zone(t, z)
			for _, f := range propertyFrequencies {
				r := compile(t, f)
				var want []time.Time
				if r.kind == kindCron {
					want = refCron(r.cron, loc, from, to)
				} else {
					want = refDays(f, loc, from, to)
				}
				var got []time.Time
				for after := from; ; {
					n, err := r.Next(loc, after)
					if err != nil {
						t.Fatalf("%s: Next(%s): %v", f, after, err)
					}
					if !n.After(after) {
						t.Fatalf("%s: Next(%s) = %s, not later", f, after, n)
					}
					if n.After(to) {
						break
					}
					got = append(got, n)
					after = n
				}
				if !slices.EqualFunc(got, want, time.Time.Equal) {
					reportDiff(t, f, got, want)
				}
			}
		})
	}
}

func reportDiff(t *testing.T, f Frequency, got, want []time.Time) {
	t.Helper()
	for i := 0; i < max(len(got), len(want)); i++ {
		var g, w string
		if i < len(got) {
			g = got[i].Format(time.RFC3339)
		}
		if i < len(want) {
			w = want[i].Format(time.RFC3339)
		}
		if g != w {
			t.Errorf("%s: %d runs, reference %d; first difference at %d: got %s, want %s", f, len(got), len(want), i, g, w)
			return
		}
	}
}

// Starting Next from every minute around the transitions (including inside
// the gap and the repeated hour) gives the same answers as the reference.
func TestNextFromEveryMinuteNearTransitions(t *testing.T) {
	windows := map[string][]string{
		zNewYork:  {"2026-03-08T05:00:00Z", "2026-11-01T04:00:00Z"},
		zBerlin:   {"2026-03-28T23:00:00Z", "2026-10-24T23:00:00Z"},
		zSydney:   {"2026-04-04T13:00:00Z", "2026-10-03T13:00:00Z"},
		zLordHowe: {"2026-04-04T13:00:00Z", "2026-10-03T13:00:00Z"},
	}
	freqs := []Frequency{daily("01:45"), daily("02:15"), daily("02:30"), daily("03:00"),
		cron("* * * * *"), cron("*/10 1-3 * * *"), cron("45 1 * * *"), cron("15 2 * * *")}
	for z, starts := range windows {
		loc := zone(t, z)
		for _, s := range starts {
			begin := instant(t, s)
			for _, f := range freqs {
				r := compile(t, f)
				end := begin.Add(5*time.Hour + 48*time.Hour)
				var want []time.Time
				if r.kind == kindCron {
					want = refCron(r.cron, loc, begin.Add(-time.Minute), end)
				} else {
					want = refDays(f, loc, begin.Add(-time.Minute), end)
				}
				for after := begin; after.Before(begin.Add(5 * time.Hour)); after = after.Add(time.Minute) {
					got, err := r.Next(loc, after)
					i, _ := slices.BinarySearchFunc(want, after, func(a, b time.Time) int { return a.Compare(b) })
					for i < len(want) && !want[i].After(after) {
						i++
					}
					if err != nil || i >= len(want) || !got.Equal(want[i]) {
						t.Errorf("%s in %s: Next(%s) = %s, %v; reference %v", f, z, after.In(loc).Format(time.RFC3339), got.Format(time.RFC3339), err, want[min(i, len(want)-1)].Format(time.RFC3339))
					}
				}
			}
		}
	}
}
