package repo

import (
	"sort"
	"strings"

	"github.com/cairn-backup/cairn/internal/repo/format"
	"github.com/cairn-backup/cairn/internal/retention"
)

// Policy says which backups to keep (package retention has the rules).
type Policy = retention.Policy

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
	items := make([]retention.Item, len(backups))
	for i, m := range backups {
		items[i] = retention.Item{Time: m.Time, Group: GroupKey(m)}
	}
	out := make([]Decision, len(backups))
	for i, d := range retention.Apply(items, p) {
		out[i] = Decision{Backup: backups[i], Keep: d.Keep, Reasons: d.Reasons}
	}
	return out
}
