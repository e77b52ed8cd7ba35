package repo

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/repo/format"
)

// Policy says which backups to keep, with restic's meanings: the newest
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

// Decision is the fate of one backup under a policy.
type Decision struct {
	Backup  *format.Manifest
	Keep    bool
	Reasons []string // the rules that keep it
}

// GroupKey groups backups for retention: by host, kind and source paths,
// so that each machine's each source keeps its own history.
func GroupKey(m *format.Manifest) string {
	paths := append([]string(nil), m.Paths...)
	sort.Strings(paths)
	return m.Host + "\x00" + m.Kind + "\x00" + strings.Join(paths, "\x00")
}

// ApplyPolicy decides, group by group, which backups a policy keeps. The
// result is in the order of backups.
func ApplyPolicy(backups []*format.Manifest, p Policy) []Decision {
	groups := map[string][]int{}
	for i, m := range backups {
		k := GroupKey(m)
		groups[k] = append(groups[k], i)
	}
	out := make([]Decision, len(backups))
	for i, m := range backups {
		out[i].Backup = m
	}
	for _, idx := range groups {
		// newest first
		sort.SliceStable(idx, func(a, b int) bool { return backups[idx[a]].Time.After(backups[idx[b]].Time) })
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
				k := b.key(backups[i].Time.Local())
				if k != last {
					keep(i, b.name)
					last = k
					left--
				}
			}
		}
		if p.Within > 0 && len(idx) > 0 {
			newest := backups[idx[0]].Time
			for _, i := range idx {
				if !backups[i].Time.Before(newest.Add(-p.Within)) {
					keep(i, "within")
				}
			}
		}
	}
	return out
}
