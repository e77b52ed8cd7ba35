package schedule

import (
	"errors"
	"testing"
	"time"
)

// fuzzMatches checks a local time against the masks, with its own
// day-of-month/day-of-week rule.
func fuzzMatches(s *cronSpec, lt time.Time) bool {
	if s.minute&(1<<lt.Minute()) == 0 || s.hour&(1<<lt.Hour()) == 0 || s.month&(1<<int(lt.Month())) == 0 {
		return false
	}
	domOK := s.dom&(1<<lt.Day()) != 0
	dowOK := s.dow&(1<<int(lt.Weekday())) != 0
	if s.domStar || s.dowStar {
		return domOK && dowOK
	}
	return domOK || dowOK
}

// FuzzParseCron: parsing never panics; an accepted expression's next run is
// strictly later and its wall clock matches the expression, unless the run
// was moved to the end of a gap (then some skipped minute matches).
// Seeds live in testdata/fuzz/FuzzParseCron.
func FuzzParseCron(f *testing.F) {
	locs := []*time.Location{time.UTC, zone(f, zNewYork), zone(f, zLordHowe)}
	// 01:30 EST, half an hour before New York's spring gap.
	from := time.Date(2026, 3, 8, 6, 30, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, expr string) {
		spec, err := parseCron(expr)
		_, ferr := ParseCron(expr)
		if (err == nil) != (ferr == nil) {
			t.Fatalf("parseCron and ParseCron disagree on %q: %v / %v", expr, err, ferr)
		}
		if err != nil {
			var ce *CronError
			if spec != nil || !errors.As(err, &ce) {
				t.Fatalf("%q: spec %v, error %T %v", expr, spec, err, err)
			}
			return
		}
		r := Rule{kind: kindCron, cron: spec, freq: cron(expr)}
		for _, loc := range locs {
			n, err := r.Next(loc, from)
			if err != nil {
				if !errors.Is(err, ErrNoRun) {
					t.Fatalf("%q in %s: %v", expr, loc, err)
				}
				continue
			}
			if !n.After(from) {
				t.Fatalf("%q in %s: Next(%s) = %s, not later", expr, loc, from, n)
			}
			lt := n.In(loc)
			if !fuzzMatches(spec, lt) && !movedByGap(spec, lt) {
				t.Fatalf("%q in %s: Next = %s does not match", expr, loc, lt.Format(time.RFC3339))
			}
			if n2, err := r.Next(loc, n); err == nil && !n2.After(n) {
				t.Fatalf("%q in %s: Next(%s) = %s, not later", expr, loc, n, n2)
			}
		}
	})
}

// movedByGap reports whether lt is the first instant after a spring-forward
// gap in which some minute matches.
func movedByGap(s *cronSpec, lt time.Time) bool {
	start, _ := lt.ZoneBounds()
	if !lt.Equal(start) {
		return false
	}
	before := lt.Add(-time.Second)
	_, offBefore := before.Zone()
	_, offAfter := lt.Zone()
	if offAfter <= offBefore {
		return false
	}
	// The skipped wall minutes: from the minute after the last one shown
	// before the gap up to the one shown at its end (exclusive).
	skipped := time.Duration(offAfter-offBefore) * time.Second
	wall := time.Date(lt.Year(), lt.Month(), lt.Day(), lt.Hour(), lt.Minute(), 0, 0, time.UTC)
	for m := skipped; m > 0; m -= time.Minute {
		if fuzzMatches(s, wall.Add(-m)) {
			return true
		}
	}
	return false
}
