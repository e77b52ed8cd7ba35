// Package retention decides which backups (or snapshots) a retention
// policy keeps, with restic's rules: the newest N; the newest of each of the
// last N hours, days, ISO weeks, months and years that have any; and all
// within a duration of the newest. It is shared by `cairn repo forget`, the
// server's backup forget and schedules. Standard library only.
package retention

import (
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
)

// Policy says which items to keep, with restic's meanings: the newest
// Last backups; for Daily days (Weekly ISO weeks, Monthly months, Yearly
// years) that have backups, the newest of each, newest periods first; and
// every backup within Within of the newest backup. A backup kept by any rule
// is kept. Periods use local time.
type Policy struct {
	Last, Hourly, Daily, Weekly, Monthly, Yearly int
	Within                                       time.Duration
}

// Empty reports whether the policy has no rule (it would keep nothing).
func (p Policy) Empty() bool {
	return p.Last == 0 && p.Hourly == 0 && p.Daily == 0 && p.Weekly == 0 && p.Monthly == 0 && p.Yearly == 0 && p.Within == 0
}

// Item is one thing a policy may keep: its point in time, and its group
// (items of different groups are decided separately, e.g. one history per
// volume or per host and source).
type Item struct {
	Time  time.Time
	Group string
}

// Decision is the fate of one item under a policy.
type Decision struct {
	Keep    bool
	Reasons []string // the rules that keep it: last, hourly, daily, weekly, monthly, yearly, within
}

// Apply decides, group by group, which items a policy keeps. The result is
// in the order of items. Periods use local time.
func Apply(items []Item, p Policy) []Decision {
	groups := map[string][]int{}
	for i, it := range items {
		groups[it.Group] = append(groups[it.Group], i)
	}
	out := make([]Decision, len(items))
	for _, idx := range groups {
		// newest first
		sort.SliceStable(idx, func(a, b int) bool { return items[idx[a]].Time.After(items[idx[b]].Time) })
		keep := func(i int, why string) {
			out[i].Keep = true
			out[i].Reasons = append(out[i].Reasons, why)
		}
		for n, i := range idx {
			if n < p.Last {
				keep(i, "last")
			}
		}
		buckets := []struct {
			n    int
			name string
			key  func(time.Time) string
		}{
			{p.Hourly, "hourly", func(t time.Time) string { return t.Format("2006-01-02 15") }},
			{p.Daily, "daily", func(t time.Time) string { return t.Format("2006-01-02") }},
			{p.Weekly, "weekly", func(t time.Time) string { y, w := t.ISOWeek(); return fmt.Sprintf("%d-%02d", y, w) }},
			{p.Monthly, "monthly", func(t time.Time) string { return t.Format("2006-01") }},
			{p.Yearly, "yearly", func(t time.Time) string { return t.Format("2006") }},
		}
		for _, b := range buckets {
			left, last := b.n, ""
			for _, i := range idx {
				if left <= 0 {
					break
				}
				k := b.key(items[i].Time.Local())
				if k != last {
					keep(i, b.name)
					last = k
					left--
				}
			}
		}
		if p.Within > 0 && len(idx) > 0 {
			newest := items[idx[0]].Time
			for _, i := range idx {
				if !items[i].Time.Before(newest.Add(-p.Within)) {
					keep(i, "within")
				}
			}
		}
	}
	return out
}

// Check refuses negative counts.
func (p Policy) Check() error {
	for _, n := range []int{p.Last, p.Hourly, p.Daily, p.Weekly, p.Monthly, p.Yearly} {
		if n < 0 {
			return core.Invalid("a --keep-* count cannot be negative")
		}
	}
	if p.Within < 0 {
		return core.Invalid("--keep-within cannot be negative")
	}
	return nil
}

// ParseDuration parses 14d, 2w, 36h, 1y2m (y=365d, m=30d) or any
// time.ParseDuration form, positive.
func ParseDuration(s string) (time.Duration, error) {
	if d, err := time.ParseDuration(s); err == nil && d > 0 {
		return d, nil
	}
	units := map[byte]time.Duration{'y': 365 * 24 * time.Hour, 'm': 30 * 24 * time.Hour, 'w': 7 * 24 * time.Hour, 'd': 24 * time.Hour, 'h': time.Hour}
	var total time.Duration
	rest := s
	for rest != "" {
		i := 0
		for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
			i++
		}
		if i == 0 || i == len(rest) || i > 6 {
			return 0, core.Invalid("invalid duration %q: use a number and a unit, such as 14d, 2w, 36h", s)
		}
		n, _ := strconv.Atoi(rest[:i])
		u, ok := units[rest[i]]
		if !ok {
			return 0, core.Invalid("invalid duration %q: unknown unit %q (y, m, w, d, h)", s, rest[i])
		}
		total += time.Duration(n) * u
		rest = rest[i+1:]
	}
	if total <= 0 {
		return 0, core.Invalid("invalid duration %q: must be positive", s)
	}
	return total, nil
}
