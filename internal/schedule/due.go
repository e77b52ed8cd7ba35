package schedule

import (
	"errors"
	"time"
)

// DefaultGrace is how old a missed slot may be and still run when the
// scheduler comes back.
const DefaultGrace = 6 * time.Hour

// missedCountLimit caps the counting of missed slots (a frequent cron
// schedule that was down for years); Decision.Missed saturates there.
const missedCountLimit = 100000

// State is what the scheduler remembers of a schedule.
type State struct {
	Created  time.Time // when the schedule was created: slots count from here while LastSlot is zero
	LastSlot time.Time // the last slot handled (run or skipped); zero = never
}

// Decision is what Due decided.
type Decision struct {
	// Slot is the most recent slot in (base, now], where base is
	// State.LastSlot or, if that is zero, State.Created. It is zero when no
	// slot fell in that interval. Whether it runs or not, the caller records
	// it as State.LastSlot.
	Slot time.Time
	// Run: Slot is within the grace period of now and should run, once.
	Run bool
	// Missed counts slots in (base, now] that will not run: all but the
	// latest, plus the latest too when it is older than the grace period.
	// It saturates at 100000.
	Missed int
}

// Due decides, for a scheduler that may have been down, what to do at now.
// It never asks for a burst of runs: at most the latest slot runs.
func Due(f Frequency, loc *time.Location, st State, now time.Time, grace time.Duration) (Decision, error) {
	r, err := f.Compile()
	if err != nil {
		return Decision{}, err
	}
	return r.Due(loc, st, now, grace)
}

// Due is Due for a compiled rule.
func (r Rule) Due(loc *time.Location, st State, now time.Time, grace time.Duration) (Decision, error) {
	if grace < 0 {
		return Decision{}, errors.New("schedule: negative grace period")
	}
	base := st.LastSlot
	if base.IsZero() {
		base = st.Created
	}
	if base.IsZero() {
		return Decision{}, errors.New("schedule: state has neither a last slot nor a creation time")
	}
	if !now.After(base) {
		return Decision{}, nil
	}
	latest, err := r.latestIn(loc, base, now)
	if err != nil || latest.IsZero() {
		return Decision{}, err
	}
	d := Decision{Slot: latest}
	// Count the superseded slots before the latest one.
	t := base
	for d.Missed < missedCountLimit {
		n, err := r.Next(loc, t)
		if err != nil || !n.Before(latest) {
			break
		}
		d.Missed++
		t = n
	}
	if now.Sub(latest) <= grace {
		d.Run = true
	} else if d.Missed < missedCountLimit {
		d.Missed++
	}
	return d, nil
}

// latestIn returns the last slot in (base, now], or the zero time. It looks
// back from now over doubling windows, so the cost grows with the log of the
// downtime, not with the number of slots in it.
func (r Rule) latestIn(loc *time.Location, base, now time.Time) (time.Time, error) {
	back := time.Minute
	for {
		lo := base
		if back < now.Sub(base) {
			lo = now.Add(-back)
		}
		n, err := r.Next(loc, lo)
		if err != nil {
			if errors.Is(err, ErrNoRun) && lo.Equal(base) {
				return time.Time{}, nil
			}
			if !errors.Is(err, ErrNoRun) {
				return time.Time{}, err
			}
		} else if !n.After(now) {
			// n is in (lo, now]; walk forward to the last one.
			for {
				m, err := r.Next(loc, n)
				if err != nil || m.After(now) {
					return n, nil
				}
				n = m
			}
		}
		if lo.Equal(base) {
			return time.Time{}, nil
		}
		back *= 2
	}
}
