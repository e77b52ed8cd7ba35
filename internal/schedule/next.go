package schedule

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// ErrNoRun is returned (wrapped) by Next when no run exists within the
// search horizon.
var ErrNoRun = errors.New("schedule: no run within the search horizon")

// cronHorizonYears bounds the cron search. Every accepted expression fires
// within it: the longest gap between matching days is a 29 February that
// must also be a given weekday (up to 40 years around 2100).
const cronHorizonYears = 100

type kind uint8

const (
	kindNone kind = iota
	kindDaily
	kindWeekly
	kindMonthly
	kindCron
)

// Rule is a validated, compiled Frequency. Compile once and call Next many
// times; the zero Rule is invalid.
type Rule struct {
	kind    kind
	tod     int64 // time of day in seconds (daily, weekly, monthly)
	weekday int   // 0 = Sunday (weekly)
	day     int   // 1-31 (monthly)
	cron    *cronSpec
	freq    Frequency // normalised form
}

// Frequency returns the normalised frequency the rule was compiled from.
func (r Rule) Frequency() Frequency { return r.freq }

// Compile validates f and prepares it for Next.
func (f Frequency) Compile() (Rule, error) {
	k := strings.ToLower(strings.TrimSpace(f.Kind))
	n := Frequency{Kind: k}
	r := Rule{}
	notFor := func(field, value string) error {
		return fmt.Errorf("schedule: a %s frequency does not take %q (got %s)", k, field, value)
	}
	// Fields that do not belong to the kind are refused.
	switch k {
	case KindDaily, KindWeekly, KindMonthly:
		if f.Expr != "" {
			return Rule{}, notFor("expr", fmt.Sprintf("%q", f.Expr))
		}
		if k != KindWeekly && f.Weekday != "" {
			return Rule{}, notFor("weekday", fmt.Sprintf("%q", f.Weekday))
		}
		if k != KindMonthly && f.Day != 0 {
			return Rule{}, notFor("day", fmt.Sprint(f.Day))
		}
	case KindCron:
		switch {
		case f.Time != "":
			return Rule{}, notFor("time", fmt.Sprintf("%q", f.Time))
		case f.Weekday != "":
			return Rule{}, notFor("weekday", fmt.Sprintf("%q", f.Weekday))
		case f.Day != 0:
			return Rule{}, notFor("day", fmt.Sprint(f.Day))
		case strings.TrimSpace(f.Expr) == "":
			return Rule{}, errors.New("schedule: a cron frequency needs an expression (expr), e.g. \"*/15 * * * *\"")
		}
		c, err := parseCron(f.Expr)
		if err != nil {
			return Rule{}, err
		}
		r.kind, r.cron = kindCron, c
		n.Expr = strings.TrimSpace(f.Expr)
	default:
		return Rule{}, unknownKind(f.Kind)
	}
	switch k {
	case KindDaily:
		r.kind = kindDaily
	case KindWeekly:
		if f.Weekday == "" {
			return Rule{}, errors.New("schedule: a weekly frequency needs a weekday (sun..sat)")
		}
		wd, err := parseWeekday(f.Weekday)
		if err != nil {
			return Rule{}, err
		}
		r.kind, r.weekday = kindWeekly, wd
		n.Weekday = weekdayNames[wd]
	case KindMonthly:
		if f.Day == 0 {
			return Rule{}, errors.New("schedule: a monthly frequency needs a day (1-31)")
		}
		if f.Day < 1 || f.Day > 31 {
			return Rule{}, fmt.Errorf("schedule: day %d is out of range 1-31", f.Day)
		}
		r.kind, r.day = kindMonthly, f.Day
		n.Day = f.Day
	}
	if r.kind != kindCron {
		if f.Time == "" {
			return Rule{}, fmt.Errorf("schedule: a %s frequency needs a time (HH:MM)", k)
		}
		h, m, err := parseClock(f.Time)
		if err != nil {
			return Rule{}, err
		}
		r.tod = int64(h*3600 + m*60)
		n.Time = string([]byte{byte('0' + h/10), byte('0' + h%10), ':', byte('0' + m/10), byte('0' + m%10)})
	}
	r.freq = n
	return r, nil
}

// Next returns the first run of f strictly after after, in zone loc (nil
// means UTC), expressed in loc.
func (f Frequency) Next(loc *time.Location, after time.Time) (time.Time, error) {
	r, err := f.Compile()
	if err != nil {
		return time.Time{}, err
	}
	return r.Next(loc, after)
}

// NextN returns the next n runs of f after after, strictly increasing.
func (f Frequency) NextN(loc *time.Location, after time.Time, n int) ([]time.Time, error) {
	r, err := f.Compile()
	if err != nil {
		return nil, err
	}
	return r.NextN(loc, after, n)
}

// NextN returns the next n runs after after, strictly increasing. On error
// it returns the runs found so far with the error.
func (r Rule) NextN(loc *time.Location, after time.Time, n int) ([]time.Time, error) {
	out := make([]time.Time, 0, min(max(n, 0), 1024))
	for range n {
		t, err := r.Next(loc, after)
		if err != nil {
			return out, err
		}
		out = append(out, t)
		after = t
	}
	return out, nil
}

// Supported range of the after argument: years 1 to 9999.
const (
	minAfterUnix = -62135596800 // 0001-01-01T00:00:00Z
	maxAfterUnix = 253402300799 // 9999-12-31T23:59:59Z
)

// Next returns the first run strictly after after, in zone loc (nil means
// UTC), expressed in loc. See the package documentation for the rules.
func (r Rule) Next(loc *time.Location, after time.Time) (time.Time, error) {
	if r.kind == kindNone {
		return time.Time{}, errors.New("schedule: invalid (zero) rule")
	}
	if loc == nil {
		loc = time.UTC
	}
	sec := after.Unix()
	if sec < minAfterUnix || sec > maxAfterUnix {
		return time.Time{}, fmt.Errorf("schedule: time %s is outside the supported years 1-9999", after.Format(time.RFC3339))
	}
	// Every run shows a wall time later than any the clock has shown up to
	// after, so the search starts at the next whole minute past that.
	from := floorDiv(maxWallThrough(loc, after), 60)*60 + 60
	var (
		inst int64
		ok   bool
	)
	switch r.kind {
	case kindDaily, kindWeekly:
		inst, ok = r.nextByDay(loc, sec, from)
	case kindMonthly:
		inst, ok = r.nextMonthly(loc, sec, from)
	case kindCron:
		inst, ok = r.cron.next(loc, sec, from)
	}
	if !ok {
		return time.Time{}, fmt.Errorf("%w (%s after %s)", ErrNoRun, r.freq.String(), after.Format(time.RFC3339))
	}
	return time.Unix(inst, 0).In(loc), nil
}

// nextByDay handles daily and weekly rules: the first day on or after the
// wall time from whose run lies after sec.
func (r Rule) nextByDay(loc *time.Location, sec, from int64) (int64, bool) {
	day := floorDiv(from, secondsPerDay)
	if from-day*secondsPerDay > r.tod {
		day++
	}
	stride := int64(1)
	if r.kind == kindWeekly {
		day += int64((r.weekday - weekdayOf(day) + 7) % 7)
		stride = 7
	}
	// Normally the first candidate is the answer; more than one is only
	// looked at when zone changes pile up in one day.
	for range 64 {
		if inst, _ := firstInstant(loc, day*secondsPerDay+r.tod); inst > sec {
			return inst, true
		}
		day += stride
	}
	return 0, false
}

// nextMonthly: the rule's day, or the month's last day when the month is
// shorter.
func (r Rule) nextMonthly(loc *time.Location, sec, from int64) (int64, bool) {
	y, m, _ := civilFromDays(floorDiv(from, secondsPerDay))
	for range 64 {
		d := min(r.day, daysIn(y, m))
		if w := daysFromCivil(y, m, d)*secondsPerDay + r.tod; w >= from {
			if inst, _ := firstInstant(loc, w); inst > sec {
				return inst, true
			}
		}
		if m++; m > 12 {
			m, y = 1, y+1
		}
	}
	return 0, false
}

// next walks matching days from the wall time from (a whole minute), then
// matching hours and minutes within each day, and maps each matching wall
// minute to its instant; the first instant after sec wins. Instants are
// non-decreasing in wall time, so minutes of a gap (which all map to the
// gap's end) and minutes the clock already showed before a fall back
// (which map to their first occurrence, not after sec) are skipped by the
// same comparison.
func (c *cronSpec) next(loc *time.Location, sec, from int64) (int64, bool) {
	day := floorDiv(from, secondsPerDay)
	rest := from - day*secondsPerDay
	h0, m0 := int(rest/3600), int(rest%3600/60)
	y, mo, d := civilFromDays(day)
	wd := weekdayOf(day)
	last := day + cronHorizonYears*366
	for day <= last {
		if c.month&(1<<uint(mo)) == 0 {
			skip := daysIn(y, mo) - d + 1
			day += int64(skip)
			wd = (wd + skip) % 7
			d = 1
			if mo++; mo > 12 {
				mo, y = 1, y+1
			}
			h0, m0 = 0, 0
			continue
		}
		if c.dayMatches(d, wd) {
			for h := nextBit(c.hour, h0); h >= 0; h = nextBit(c.hour, h+1) {
				mFrom := 0
				if h == h0 {
					mFrom = m0
				}
				for m := nextBit(c.minute, mFrom); m >= 0; m = nextBit(c.minute, m+1) {
					w := day*secondsPerDay + int64(h*3600+m*60)
					if inst, _ := firstInstant(loc, w); inst > sec {
						return inst, true
					}
				}
			}
		}
		day++
		wd = (wd + 1) % 7
		if d++; d > daysIn(y, mo) {
			d = 1
			if mo++; mo > 12 {
				mo, y = 1, y+1
			}
		}
		h0, m0 = 0, 0
	}
	return 0, false
}
