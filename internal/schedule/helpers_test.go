package schedule

import (
	"strings"
	"testing"
	"time"
)

// Zones used throughout the tests.
const (
	zUTC      = "UTC"
	zNewYork  = "America/New_York"
	zBerlin   = "Europe/Berlin"
	zSydney   = "Australia/Sydney"
	zLordHowe = "Australia/Lord_Howe"
	zKolkata  = "Asia/Kolkata"
)

var allZones = []string{zUTC, zNewYork, zBerlin, zSydney, zLordHowe, zKolkata}

func zone(tb testing.TB, name string) *time.Location {
	tb.Helper()
	loc, err := LoadZone(name)
	if err != nil {
		tb.Fatal(err)
	}
	return loc
}

func instant(tb testing.TB, s string) time.Time {
	tb.Helper()
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		tb.Fatal(err)
	}
	return t
}

func rfc(ts []time.Time) string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.Format(time.RFC3339)
	}
	return strings.Join(out, " ")
}

func daily(hhmm string) Frequency { return Frequency{Kind: KindDaily, Time: hhmm} }
func weekly(wd, hhmm string) Frequency {
	return Frequency{Kind: KindWeekly, Weekday: wd, Time: hhmm}
}
func monthly(day int, hhmm string) Frequency {
	return Frequency{Kind: KindMonthly, Day: day, Time: hhmm}
}
func cron(expr string) Frequency { return Frequency{Kind: KindCron, Expr: expr} }

func compile(tb testing.TB, f Frequency) Rule {
	tb.Helper()
	r, err := f.Compile()
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

// wantErr checks that err is non-nil and mentions every fragment.
func wantErr(t *testing.T, what string, err error, fragments ...string) {
	t.Helper()
	if err == nil {
		t.Errorf("%s: no error, want one mentioning %q", what, fragments)
		return
	}
	for _, f := range fragments {
		if !strings.Contains(err.Error(), f) {
			t.Errorf("%s: error %q does not mention %q", what, err, f)
		}
	}
}
