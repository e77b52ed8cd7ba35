package schedule

import (
	"fmt"
	"math/bits"
	"strings"
)

// CronError explains why a cron expression was refused. Field and Text name
// the offending field ("minute", "hour", "day-of-month", "month",
// "day-of-week") and its text when the problem is in one field.
type CronError struct {
	Expr   string
	Field  string
	Text   string
	Reason string
}

func (e *CronError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("schedule: cron expression %q: %s field %q: %s", e.Expr, e.Field, e.Text, e.Reason)
	}
	return fmt.Sprintf("schedule: cron expression %q: %s", e.Expr, e.Reason)
}

// cronSpec is a parsed 5-field expression: one bit per allowed value.
type cronSpec struct {
	minute uint64 // bits 0-59
	hour   uint64 // bits 0-23
	dom    uint64 // bits 1-31
	month  uint64 // bits 1-12
	dow    uint64 // bits 0-6, 0 = Sunday
	// domStar and dowStar record that the field started with '*'. When
	// neither did, a day matches if day-of-month OR day-of-week matches
	// (Vixie cron); otherwise both must match.
	domStar, dowStar bool
}

func (c *cronSpec) dayMatches(d, wd int) bool {
	domOK := c.dom&(1<<uint(d)) != 0
	dowOK := c.dow&(1<<uint(wd)) != 0
	if c.domStar || c.dowStar {
		return domOK && dowOK
	}
	return domOK || dowOK
}

// nextBit returns the lowest set bit of mask at or above from, or -1.
func nextBit(mask uint64, from int) int {
	if from >= 64 {
		return -1
	}
	m := mask >> uint(from) << uint(from)
	if m == 0 {
		return -1
	}
	return bits.TrailingZeros64(m)
}

type cronField struct {
	name     string
	min, max int      // values accepted
	starMax  int      // upper end of '*' and of "a/n"
	names    []string // three-letter names for min, min+1, ... (nil: numbers only)
	nameBase int      // the value of names[0]
}

var cronFields = [5]cronField{
	{name: "minute", min: 0, max: 59, starMax: 59},
	{name: "hour", min: 0, max: 23, starMax: 23},
	{name: "day-of-month", min: 1, max: 31, starMax: 31},
	{name: "month", min: 1, max: 12, starMax: 12,
		names: []string{"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"}, nameBase: 1},
	// 7 is accepted as Sunday in values and ranges; '*' means 0-6.
	{name: "day-of-week", min: 0, max: 7, starMax: 6,
		names: []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}, nameBase: 0},
}

var cronMacros = map[string]string{
	"@yearly":   "0 0 1 1 *",
	"@annually": "0 0 1 1 *",
	"@monthly":  "0 0 1 * *",
	"@weekly":   "0 0 * * 0",
	"@daily":    "0 0 * * *",
	"@midnight": "0 0 * * *",
	"@hourly":   "0 * * * *",
}

// parseCron parses a 5-field cron expression or macro. It never panics and
// refuses expressions that can never fire.
func parseCron(expr string) (*cronSpec, error) {
	text := strings.TrimSpace(expr)
	fail := func(reason string, a ...any) error {
		return &CronError{Expr: expr, Reason: fmt.Sprintf(reason, a...)}
	}
	if text == "" {
		return nil, fail("empty expression; want 5 fields: minute hour day-of-month month day-of-week")
	}
	if strings.HasPrefix(text, "@") {
		word := strings.ToLower(text)
		if m, ok := cronMacros[word]; ok {
			text = m
		} else {
			switch {
			case word == "@reboot":
				return nil, fail("@reboot is not a time schedule")
			case strings.HasPrefix(word, "@every"):
				return nil, fail("@every is not supported; use a step such as */15 in the minute field")
			default:
				return nil, fail("unknown macro %q (known: @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually)", text)
			}
		}
	}
	parts := strings.Fields(text)
	switch len(parts) {
	case 5:
	case 6:
		return nil, fail("has 6 fields; a seconds (or year) field is not supported: use 5 fields: minute hour day-of-month month day-of-week")
	case 7:
		return nil, fail("has 7 fields; seconds and year fields are not supported: use 5 fields: minute hour day-of-month month day-of-week")
	default:
		return nil, fail("has %d field(s); want 5: minute hour day-of-month month day-of-week", len(parts))
	}
	var masks [5]uint64
	for i, p := range parts {
		m, err := parseCronField(p, &cronFields[i])
		if err != nil {
			return nil, &CronError{Expr: expr, Field: cronFields[i].name, Text: p, Reason: err.Error()}
		}
		masks[i] = m
	}
	c := &cronSpec{
		minute:  masks[0],
		hour:    masks[1],
		dom:     masks[2],
		month:   masks[3],
		dow:     masks[4],
		domStar: parts[2][0] == '*',
		dowStar: parts[4][0] == '*',
	}
	if !c.canFire() {
		return nil, fail("never runs: no month in month field %q has a day in day-of-month field %q", parts[3], parts[2])
	}
	return c, nil
}

// canFire reports whether some day matches. Only the day-of-month field can
// exclude every day: with the OR rule any listed weekday fires, and every
// valid month/day date falls on each weekday in the 400-year Gregorian
// cycle. So the check is exact and does not depend on the current date.
func (c *cronSpec) canFire() bool {
	if !c.domStar && !c.dowStar {
		return true
	}
	for m := 1; m <= 12; m++ {
		if c.month&(1<<uint(m)) == 0 {
			continue
		}
		longest := daysIn(2000, m) // 2000 is a leap year: February has 29
		if c.dom&((uint64(1)<<uint(longest+1))-2) != 0 {
			return true
		}
	}
	return false
}

type fieldError string

func (e fieldError) Error() string { return string(e) }

func fieldErr(format string, a ...any) error { return fieldError(fmt.Sprintf(format, a...)) }

// parseCronField turns one field into its bit mask.
func parseCronField(s string, f *cronField) (uint64, error) {
	var mask uint64
	for item := range strings.SplitSeq(s, ",") {
		m, err := parseCronItem(item, f)
		if err != nil {
			return 0, err
		}
		mask |= m
	}
	return mask, nil
}

func parseCronItem(item string, f *cronField) (uint64, error) {
	if item == "" {
		return 0, fieldErr("empty list item")
	}
	rng, stepText, hasStep := strings.Cut(item, "/")
	step := 1
	if hasStep {
		if stepText == "" {
			return 0, fieldErr("%q: missing step after '/'", item)
		}
		n, ok := parseDigits(stepText)
		if !ok {
			return 0, fieldErr("%q: step %q is not a number", item, stepText)
		}
		if n == 0 {
			return 0, fieldErr("%q: step 0 is not allowed", item)
		}
		if span := f.starMax - f.min + 1; n > span {
			return 0, fieldErr("%q: step %s is larger than the field's range %d-%d", item, stepText, f.min, f.starMax)
		}
		step = n
	}
	var lo, hi int
	switch {
	case rng == "*":
		lo, hi = f.min, f.starMax
	case rng == "":
		return 0, fieldErr("%q: missing value", item)
	default:
		a, b, isRange := strings.Cut(rng, "-")
		var err error
		if lo, err = parseCronValue(a, f); err != nil {
			return 0, err
		}
		switch {
		case isRange:
			if hi, err = parseCronValue(b, f); err != nil {
				return 0, err
			}
			if lo > hi {
				return 0, fieldErr("range %q is reversed (%d > %d)", rng, lo, hi)
			}
		case hasStep:
			hi = f.starMax // "a/n": from a to the end of the field
			if lo > hi {
				hi = lo
			}
		default:
			hi = lo
		}
	}
	var mask uint64
	for v := lo; v <= hi; v += step {
		bit := v
		if f.max == 7 && v == 7 { // day-of-week 7 is Sunday
			bit = 0
		}
		mask |= 1 << uint(bit)
	}
	return mask, nil
}

// parseCronValue parses a number or a name and checks its range.
func parseCronValue(s string, f *cronField) (int, error) {
	if s == "" {
		return 0, fieldErr("missing value in a range")
	}
	if n, ok := parseDigits(s); ok {
		if n < f.min || n > f.max {
			return 0, fieldErr("value %s is out of range %d-%d", s, f.min, f.max)
		}
		return n, nil
	}
	if isQuartz(s) {
		return 0, fieldErr("%q: the ? L W # extensions (Quartz cron) are not supported", s)
	}
	if f.names != nil {
		low := strings.ToLower(s)
		for i, name := range f.names {
			if low == name {
				return f.nameBase + i, nil
			}
		}
		return 0, fieldErr("%q is neither a number (%d-%d) nor a name (%s-%s)", s, f.min, f.max, f.names[0], f.names[len(f.names)-1])
	}
	return 0, fieldErr("%q is not a number (%d-%d)", s, f.min, f.max)
}

// parseDigits parses a run of ASCII digits (no sign). Values past 99999
// saturate there, which is out of every field's range, so that they are
// reported as out of range and never overflow.
func parseDigits(s string) (int, bool) {
	if s == "" {
		return 0, false
	}
	n := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		if n < 99999 {
			n = min(n*10+int(c-'0'), 99999)
		}
	}
	return n, true
}

// isQuartz recognises the Quartz extensions ?, L, nL, LW, nW and n#m.
func isQuartz(s string) bool {
	u := strings.ToUpper(s)
	if u == "?" || u == "L" || u == "LW" || strings.Contains(u, "#") {
		return true
	}
	if n := len(u); n >= 2 && (u[n-1] == 'L' || u[n-1] == 'W') {
		_, digits := parseDigits(u[:n-1])
		return digits
	}
	return false
}
