package schedule

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Frequency kinds.
const (
	KindDaily   = "daily"
	KindWeekly  = "weekly"
	KindMonthly = "monthly"
	KindCron    = "cron"
)

// Frequency says when a schedule runs. Its JSON form is part of the API:
//
//	{"kind": "daily", "time": "02:30"}
//	{"kind": "weekly", "weekday": "sun", "time": "03:00"}
//	{"kind": "monthly", "day": 1, "time": "04:00"}
//	{"kind": "cron", "expr": "*/15 * * * *"}
//
// Times are local wall-clock times in the schedule's zone (see LoadZone).
type Frequency struct {
	Kind    string `json:"kind"`
	Time    string `json:"time,omitempty"`
	Weekday string `json:"weekday,omitempty"`
	Day     int    `json:"day,omitempty"`
	Expr    string `json:"expr,omitempty"`
}

var weekdayNames = [7]string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}
var weekdayLong = [7]string{"sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"}

// Validate reports the first problem of f, or nil.
func (f Frequency) Validate() error {
	_, err := f.Normalize()
	return err
}

// Normalize validates f and returns its canonical form: kind in lower
// case, time as HH:MM, weekday as a three-letter lower-case name, cron
// expression trimmed.
func (f Frequency) Normalize() (Frequency, error) {
	r, err := f.Compile()
	if err != nil {
		return Frequency{}, err
	}
	return r.freq, nil
}

// String describes f for people, e.g. "weekly on sun at 03:00".
func (f Frequency) String() string {
	n, err := f.Normalize()
	if err != nil {
		return fmt.Sprintf("invalid frequency (%v)", err)
	}
	switch n.Kind {
	case KindDaily:
		return "daily at " + n.Time
	case KindWeekly:
		return "weekly on " + n.Weekday + " at " + n.Time
	case KindMonthly:
		return fmt.Sprintf("monthly on day %d at %s", n.Day, n.Time)
	default:
		return "cron " + n.Expr
	}
}

// parseClock parses "HH:MM" (a one-digit hour is accepted) in 00:00-23:59.
func parseClock(s string) (h, m int, err error) {
	hs, ms, ok := strings.Cut(s, ":")
	if ok && len(hs) >= 1 && len(hs) <= 2 && len(ms) == 2 {
		h, okh := parseDigits(hs)
		m, okm := parseDigits(ms)
		if okh && okm && h <= 23 && m <= 59 {
			return h, m, nil
		}
	}
	return 0, 0, fmt.Errorf("schedule: time %q is not a valid HH:MM time (00:00-23:59)", s)
}

// parseWeekday accepts sun..sat and sunday..saturday in any case.
func parseWeekday(s string) (int, error) {
	low := strings.ToLower(strings.TrimSpace(s))
	for i := range weekdayNames {
		if low == weekdayNames[i] || low == weekdayLong[i] {
			return i, nil
		}
	}
	return 0, fmt.Errorf("schedule: weekday %q is not one of sun, mon, tue, wed, thu, fri, sat (full names are accepted too)", s)
}

// ParseDaily parses the CLI form of a daily frequency: "02:30".
func ParseDaily(s string) (Frequency, error) {
	return Frequency{Kind: KindDaily, Time: strings.TrimSpace(s)}.Normalize()
}

// ParseWeekly parses the CLI form of a weekly frequency: "sun 03:00".
func ParseWeekly(s string) (Frequency, error) {
	parts := strings.Fields(s)
	if len(parts) != 2 {
		return Frequency{}, fmt.Errorf("schedule: weekly frequency %q: want \"WEEKDAY HH:MM\", e.g. \"sun 03:00\"", s)
	}
	return Frequency{Kind: KindWeekly, Weekday: parts[0], Time: parts[1]}.Normalize()
}

// ParseMonthly parses the CLI form of a monthly frequency: "1 04:00".
func ParseMonthly(s string) (Frequency, error) {
	parts := strings.Fields(s)
	if len(parts) != 2 {
		return Frequency{}, fmt.Errorf("schedule: monthly frequency %q: want \"DAY HH:MM\", e.g. \"1 04:00\"", s)
	}
	day, ok := parseDigits(parts[0])
	if !ok || day < 1 || day > 31 {
		return Frequency{}, fmt.Errorf("schedule: monthly frequency %q: day %q is not a number in 1-31", s, parts[0])
	}
	return Frequency{Kind: KindMonthly, Day: day, Time: parts[1]}.Normalize()
}

// ParseCron parses the CLI form of a cron frequency: a 5-field expression
// or a macro such as "@daily".
func ParseCron(expr string) (Frequency, error) {
	return Frequency{Kind: KindCron, Expr: expr}.Normalize()
}

// Parse dispatches on kind ("daily", "weekly", "monthly", "cron") to the
// Parse* function of that kind.
func Parse(kind, value string) (Frequency, error) {
	switch strings.ToLower(strings.TrimSpace(kind)) {
	case KindDaily:
		return ParseDaily(value)
	case KindWeekly:
		return ParseWeekly(value)
	case KindMonthly:
		return ParseMonthly(value)
	case KindCron:
		return ParseCron(value)
	}
	return Frequency{}, unknownKind(kind)
}

func unknownKind(kind string) error {
	if strings.TrimSpace(kind) == "" {
		return errors.New("schedule: frequency kind is missing (want daily, weekly, monthly or cron)")
	}
	return fmt.Errorf("schedule: unknown frequency kind %q (want daily, weekly, monthly or cron)", kind)
}

var zoneCache sync.Map // zone name -> *time.Location (valid names only)

// LoadZone loads a schedule's IANA time zone. The empty name means UTC.
// "Local" is refused: a schedule must name its zone, so that its runs do not
// change with the host's configuration. Loaded zones are cached by name.
func LoadZone(name string) (*time.Location, error) {
	switch name {
	case "", "UTC":
		return time.UTC, nil
	case "Local":
		return nil, errors.New(`schedule: time zone "Local" is not allowed: name an IANA zone such as "Europe/Berlin" (empty means UTC)`)
	}
	if v, ok := zoneCache.Load(name); ok {
		return v.(*time.Location), nil
	}
	loc, err := time.LoadLocation(name)
	if err != nil {
		return nil, fmt.Errorf("schedule: unknown time zone %q: want an IANA name such as \"Europe/Berlin\" or \"America/New_York\" (empty means UTC)", name)
	}
	zoneCache.Store(name, loc)
	return loc, nil
}
