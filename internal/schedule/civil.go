package schedule

import "time"

// Wall clocks are handled as "wall seconds": the seconds since
// 1970-01-01T00:00 of a local date and time read as if it were UTC. Dates
// are "days": wall seconds divided by a day. Both are plain integers, so the
// search loops never build time.Time values until an instant is known.

const secondsPerDay = 24 * 60 * 60

// floorDiv divides rounding towards minus infinity (b > 0).
func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && a < 0 {
		q--
	}
	return q
}

func isLeap(y int64) bool {
	return y%4 == 0 && (y%100 != 0 || y%400 == 0)
}

// daysIn is the number of days of month m (1-12) of year y.
func daysIn(y int64, m int) int {
	switch m {
	case 2:
		if isLeap(y) {
			return 29
		}
		return 28
	case 4, 6, 9, 11:
		return 30
	}
	return 31
}

// daysFromCivil counts days from 1970-01-01 to the proleptic Gregorian date
// y-m-d. The year is shifted to start in March so that the leap day is the
// last day of its year; a 400-year era has 146097 days.
func daysFromCivil(y int64, m, d int) int64 {
	if m <= 2 {
		y--
	}
	era := floorDiv(y, 400)
	yearOfEra := y - era*400                             // 0..399
	monthFromMarch := int64((m + 9) % 12)                // March = 0 ... February = 11
	dayOfYear := (153*monthFromMarch+2)/5 + int64(d) - 1 // 0..365
	dayOfEra := yearOfEra*365 + yearOfEra/4 - yearOfEra/100 + dayOfYear
	return era*146097 + dayOfEra - 719468 // 719468: days from 0000-03-01 to 1970-01-01
}

// civilFromDays is the inverse of daysFromCivil.
func civilFromDays(days int64) (y int64, m, d int) {
	z := days + 719468
	era := floorDiv(z, 146097)
	dayOfEra := z - era*146097 // 0..146096
	yearOfEra := (dayOfEra - dayOfEra/1460 + dayOfEra/36524 - dayOfEra/146096) / 365
	dayOfYear := dayOfEra - (365*yearOfEra + yearOfEra/4 - yearOfEra/100)
	monthFromMarch := (5*dayOfYear + 2) / 153
	d = int(dayOfYear - (153*monthFromMarch+2)/5 + 1)
	if monthFromMarch < 10 {
		m = int(monthFromMarch + 3)
	} else {
		m = int(monthFromMarch - 9)
	}
	y = yearOfEra + era*400
	if m <= 2 {
		y++
	}
	return y, m, d
}

// weekdayOf is the weekday of a day number, 0 = Sunday (1970-01-01 was a
// Thursday).
func weekdayOf(days int64) int {
	return int(((days+4)%7 + 7) % 7)
}

// wallOf is the wall clock (wall seconds) that loc shows at Unix second sec.
func wallOf(loc *time.Location, sec int64) int64 {
	_, off := time.Unix(sec, 0).In(loc).Zone()
	return sec + int64(off)
}

// maxWallThrough is (a lower bound of) the latest wall clock loc has shown
// at any instant up to and including t. It differs from the wall clock of t
// itself when t lies in a repeated hour after a fall-back transition: the
// clock then already showed the later wall times before it was set back. Only
// the zone period before t's is looked at; a lower bound is enough, because
// the callers check every candidate against t anyway.
func maxWallThrough(loc *time.Location, t time.Time) int64 {
	sec := t.Unix()
	lt := t.In(loc)
	_, off := lt.Zone()
	m := sec + int64(off)
	if loc == time.UTC {
		return m
	}
	if start, _ := lt.ZoneBounds(); !start.IsZero() {
		if w := wallOf(loc, start.Unix()-1); w > m {
			m = w
		}
	}
	return m
}

// zoneWindow bounds the search for instants showing a wall time: no zone
// offset, not even the local mean times of old tzdata entries, comes near
// 30 hours.
const zoneWindow = 30 * 60 * 60

// firstInstant returns the earliest Unix second at which loc's wall clock
// reaches wall seconds w, and whether the clock actually shows w then:
//
//   - a wall time that occurs once maps to that instant;
//   - a wall time that occurs twice (fall back) maps to its first occurrence;
//   - a wall time that does not occur (spring forward) maps to the end of the
//     gap, the transition instant, and exact is false.
//
// time.Date is not used: for a skipped wall time it may pick either offset.
// Instead the zone periods around w are walked with ZoneBounds and the wall
// time is solved in each.
func firstInstant(loc *time.Location, w int64) (sec int64, exact bool) {
	if loc == time.UTC {
		return w, true
	}
	t := time.Unix(w-zoneWindow, 0).In(loc)
	for range 16 { // a 60-hour window holds a handful of periods at most
		_, off := t.Zone()
		start, end := t.ZoneBounds()
		if !start.IsZero() {
			s := start.Unix()
			if s+int64(off) > w {
				// This period's clock starts past w and no earlier
				// period showed w: w fell into the gap before it.
				return s, false
			}
		}
		cand := w - int64(off) // the instant showing w if this period does
		if (start.IsZero() || cand >= start.Unix()) && (end.IsZero() || cand < end.Unix()) {
			return cand, true
		}
		if end.IsZero() || end.Unix() > w+zoneWindow {
			break
		}
		t = end.In(loc)
	}
	// Unreachable with real zone data; fall back to the time package.
	y, m, d := civilFromDays(floorDiv(w, secondsPerDay))
	r := w - floorDiv(w, secondsPerDay)*secondsPerDay
	return time.Date(int(y), time.Month(m), d, int(r/3600), int(r%3600/60), int(r%60), 0, loc).Unix(), false
}
