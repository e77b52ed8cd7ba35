package retention

import (
	"slices"
	"testing"
	"time"
)

func kept(items []Item, p Policy) []int {
	var out []int
	for i, d := range Apply(items, p) {
		if d.Keep {
			out = append(out, i)
		}
	}
	return out
}

func TestApply(t *testing.T) {
	time.Local = time.UTC
	day := func(d, h int) time.Time { return time.Date(2026, 3, d, h, 0, 0, 0, time.UTC) }
	// Two backups a day for ten days (1-10 March), oldest first.
	var items []Item
	for d := 1; d <= 10; d++ {
		items = append(items, Item{Time: day(d, 1)}, Item{Time: day(d, 13)})
	}
	for _, c := range []struct {
		name string
		p    Policy
		want []int
	}{
		{"nothing", Policy{}, nil},
		{"last 3", Policy{Last: 3}, []int{17, 18, 19}},
		{"daily 3", Policy{Daily: 3}, []int{15, 17, 19}},
		{"hourly 2", Policy{Hourly: 2}, []int{18, 19}},
		{"weekly 2", Policy{Weekly: 2}, []int{15, 19}}, // 2026-03-08 is a Sunday: ISO weeks end there
		{"monthly 5", Policy{Monthly: 5}, []int{19}},
		{"within 36h", Policy{Within: 36 * time.Hour}, []int{16, 17, 18, 19}},
		{"last 1 + daily 2", Policy{Last: 1, Daily: 2}, []int{17, 19}},
		{"more than there are", Policy{Last: 100}, seq(0, 20)},
	} {
		if got := kept(items, c.p); !slices.Equal(got, c.want) {
			t.Errorf("%s: kept %v, want %v", c.name, got, c.want)
		}
	}
	// Groups are decided apart; the input order does not matter.
	mixed := []Item{{Time: day(5, 0), Group: "b"}, {Time: day(1, 0), Group: "a"}, {Time: day(2, 0), Group: "a"}, {Time: day(4, 0), Group: "b"}}
	if got := kept(mixed, Policy{Last: 1}); !slices.Equal(got, []int{0, 2}) {
		t.Errorf("groups: kept %v, want [0 2]", got)
	}
	d := Apply(mixed, Policy{Last: 1, Daily: 1})
	if !slices.Equal(d[0].Reasons, []string{"last", "daily"}) {
		t.Errorf("reasons %v", d[0].Reasons)
	}
}

func seq(a, b int) []int {
	var s []int
	for i := a; i < b; i++ {
		s = append(s, i)
	}
	return s
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]time.Duration{
		"14d": 14 * 24 * time.Hour, "2w": 14 * 24 * time.Hour, "36h": 36 * time.Hour, "1y2m": (365 + 60) * 24 * time.Hour,
		"90m": 90 * time.Minute, "1h30m": 90 * time.Minute,
	} {
		if got, err := ParseDuration(in); err != nil || got != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "d", "14", "14x", "-3d", "0d", "1234567d", "0s"} {
		if _, err := ParseDuration(bad); err == nil {
			t.Errorf("ParseDuration(%q) succeeded", bad)
		}
	}
	if err := (Policy{Last: -1}).Check(); err == nil {
		t.Error("a negative count passed Check")
	}
}
