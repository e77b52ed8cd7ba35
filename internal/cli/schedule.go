package cli

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/schedule"
)

// Schedules (`cairn schedule ...`): snapshots, backups and verifies the
// server runs at set times, and what their retention keeps.

func (a *app) scheduleCommand() *cobra.Command {
	cmd := groupCommand("schedule", "Snapshot, back up or verify volumes at set times, keeping what a retention says", "schedules")
	cmd.AddCommand(
		a.scheduleCreateCommand(),
		a.scheduleListCommand(),
		a.scheduleShowCommand(),
		a.scheduleUpdateCommand(),
		a.scheduleDeleteCommand(),
		a.scheduleRunNowCommand(),
		a.scheduleNextCommand(),
		a.scheduleHistoryCommand(),
		a.scheduleRetentionPreviewCommand(),
	)
	return cmd
}

// frequencyFlags are the four ways to say when a schedule runs.
var frequencyFlags = []string{"daily", "weekly", "monthly", "cron"}

// retentionFlags are the --keep-* flags of a backup schedule's retention.
var retentionFlags = []string{"keep-last", "keep-hourly", "keep-daily", "keep-weekly", "keep-monthly", "keep-yearly", "keep-within"}

// scheduleFlags are the settings create and update share.
type scheduleFlags struct {
	volumes    []string
	selector   []string
	daily      string
	weekly     string
	monthly    string
	cron       string
	tz         string
	keep       int
	policy     policyFlags
	repository string
	readData   string
	jitter     time.Duration
}

func (sf *scheduleFlags) add(cmd *cobra.Command) {
	f := cmd.Flags()
	f.StringSliceVar(&sf.volumes, "volumes", nil, "the volumes to run on, by name or id: V1,V2 (repeatable)")
	f.StringArrayVar(&sf.selector, "selector", nil, "run on every volume with these labels at each run: k=v[,k2=v2] (repeatable)")
	f.StringVar(&sf.daily, "daily", "", "run every day at HH:MM")
	f.StringVar(&sf.weekly, "weekly", "", `run every week on a day at a time, e.g. "sun 03:00"`)
	f.StringVar(&sf.monthly, "monthly", "", `run every month on a day (1-31; past the month's end: its last day) at a time, e.g. "1 04:00"`)
	f.StringVar(&sf.cron, "cron", "", `run at the times of a 5-field cron expression, e.g. "*/15 * * * *", or a macro such as @daily`)
	f.StringVar(&sf.tz, "tz", "", "the IANA time zone of the times, e.g. Europe/Berlin (default UTC)")
	f.IntVar(&sf.keep, "keep", 0, "snapshot schedules: keep the N newest of the schedule's own snapshots per volume")
	sf.policy.add(cmd)
	f.StringVar(&sf.repository, "repository", "", "backup and verify schedules: the repository (default: the project's default)")
	f.StringVar(&sf.readData, "read-data", "", "verify schedules of the whole repository: also re-read this share of its data, e.g. 10%")
	f.DurationVar(&sf.jitter, "jitter", 0, "start each run up to this much later (a fixed offset per schedule, at most 1h), e.g. 5m")
}

// frequency converts the one frequency flag given (nil when none is and
// required is false).
func (sf *scheduleFlags) frequency(cmd *cobra.Command, required bool) (*apitypes.Frequency, error) {
	var given []string
	for _, name := range frequencyFlags {
		if cmd.Flags().Changed(name) {
			given = append(given, "--"+name)
		}
	}
	switch {
	case len(given) > 1:
		return nil, core.Invalid("give one of --daily, --weekly, --monthly and --cron, not %s", strings.Join(given, " and "))
	case len(given) == 0 && required:
		return nil, core.Invalid("say when the schedule runs: --daily HH:MM, --weekly \"sun HH:MM\", --monthly \"1 HH:MM\" or --cron \"EXPR\"")
	case len(given) == 0:
		return nil, nil
	}
	var f schedule.Frequency
	var err error
	var value string
	switch given[0] {
	case "--daily":
		value = sf.daily
		f, err = schedule.ParseDaily(value)
	case "--weekly":
		value = sf.weekly
		f, err = schedule.ParseWeekly(value)
	case "--monthly":
		value = sf.monthly
		f, err = schedule.ParseMonthly(value)
	default:
		value = sf.cron
		f, err = schedule.ParseCron(value)
	}
	if err != nil {
		return nil, core.Invalid("invalid %s %q: %s", given[0], value, strings.TrimPrefix(err.Error(), "schedule: "))
	}
	return &apitypes.Frequency{Kind: f.Kind, Time: f.Time, Weekday: f.Weekday, Day: f.Day, Expr: f.Expr}, nil
}

// retention builds a retention from the --keep-* flags given (nil when
// none is).
func (sf *scheduleFlags) retention(cmd *cobra.Command) (*apitypes.Retention, error) {
	given := false
	for _, name := range retentionFlags {
		given = given || cmd.Flags().Changed(name)
	}
	if !given {
		return nil, nil
	}
	pol, err := sf.policy.policy()
	if err != nil {
		return nil, err
	}
	if pol.Empty() {
		return nil, core.Invalid("the --keep-* flags keep nothing: give a count above 0 or a --keep-within duration")
	}
	p := sf.policy
	return &apitypes.Retention{KeepLast: p.last, KeepHourly: p.hourly, KeepDaily: p.daily, KeepWeekly: p.weekly,
		KeepMonthly: p.monthly, KeepYearly: p.yearly, KeepWithin: p.within}, nil
}

// target checks --volumes and --selector and returns what they give.
func (sf *scheduleFlags) target(cmd *cobra.Command) ([]string, map[string]string, error) {
	vols, sel := cmd.Flags().Changed("volumes"), cmd.Flags().Changed("selector")
	if vols && sel {
		return nil, nil, core.Invalid("give --volumes or --selector, not both")
	}
	if vols {
		var out []string
		for _, v := range sf.volumes {
			if v = strings.TrimSpace(v); v != "" {
				out = append(out, v)
			}
		}
		if len(out) == 0 {
			return nil, nil, core.Invalid("--volumes names no volume: give V1,V2")
		}
		return out, nil, nil
	}
	if sel {
		m, err := parseSelector(sf.selector)
		return nil, m, err
	}
	return nil, nil, nil
}

// parseSelector parses --selector values, each k=v[,k2=v2].
func parseSelector(values []string) (map[string]string, error) {
	m := map[string]string{}
	for _, v := range values {
		for _, pair := range strings.Split(v, ",") {
			k, val, ok := strings.Cut(strings.TrimSpace(pair), "=")
			if !ok || k == "" {
				return nil, core.Invalid("invalid --selector %q: use key=value[,key2=value2]", v)
			}
			if old, dup := m[k]; dup && old != val {
				return nil, core.Invalid("--selector names label %s twice", k)
			}
			m[k] = val
		}
	}
	return m, nil
}

// scheduleReadData parses --read-data: a percentage, with or without %.
func scheduleReadData(v string) (float64, error) {
	pct, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), "%"), 64)
	if err != nil || math.IsNaN(pct) || pct < 0 || pct > 100 {
		return 0, core.Invalid("invalid --read-data %q: give a percentage from 0 to 100, such as 10%%", v)
	}
	return pct, nil
}

// jitterSeconds checks --jitter.
func jitterSeconds(d time.Duration) (int, error) {
	if d < 0 {
		return 0, core.Invalid("invalid --jitter %s: it cannot be negative", d)
	}
	return int(d.Round(time.Second) / time.Second), nil
}

func (a *app) scheduleCreateCommand() *cobra.Command {
	var sf scheduleFlags
	var action string
	var disabled bool
	cmd := &cobra.Command{
		Use:   `create NAME --action snapshot|backup|verify (--volumes V1,V2 | --selector k=v[,k2=v2]) (--daily HH:MM | --weekly "sun HH:MM" | --monthly "1 HH:MM" | --cron "EXPR") [--tz Area/City] [--keep N | --keep-last N ... --keep-within DURATION] [--repository R] [--read-data N%] [--jitter DURATION] [--disabled]`,
		Short: "Make a schedule that snapshots, backs up or verifies volumes at set times",
		Long: `Make a schedule. It runs on the --volumes named, or on every volume whose labels
match --selector at the time of each run (see ` + "`cairn volume label`" + `), at the times of
exactly one of --daily, --weekly, --monthly or --cron, in --tz (default UTC). A local
time that does not exist on a DST change runs at the end of the gap; one that occurs
twice runs once, the first time. --monthly on a day a month lacks runs on its last day.

What a schedule keeps of what it made (never anything else, and never what was made
by hand):
  snapshot  --keep N: its N newest snapshots of each volume.
  backup    --keep-last, --keep-daily, ... --keep-within (restic's rules; a backup
            kept by any rule stays); without them, --keep-within 14d.
  verify    nothing is removed. With volumes, every backup of theirs in the
            repository is re-read and checked; without, the whole repository's
            structure is checked, and --read-data N% also re-reads that share of
            its data.

The first run is at the next time after now.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = a.run(func(ctx context.Context, args []string) error {
		req := apitypes.ScheduleCreate{Name: args[0], Action: action, TZ: sf.tz, Keep: sf.keep, Repository: sf.repository, Disabled: disabled}
		switch action {
		case apitypes.ScheduleSnapshot, apitypes.ScheduleBackup, apitypes.ScheduleVerify:
		default:
			return core.Invalid("invalid --action %q: use snapshot, backup or verify", action)
		}
		f, err := sf.frequency(cmd, true)
		if err != nil {
			return err
		}
		req.Frequency = *f
		if req.Volumes, req.Selector, err = sf.target(cmd); err != nil {
			return err
		}
		if req.Retention, err = sf.retention(cmd); err != nil {
			return err
		}
		if cmd.Flags().Changed("read-data") {
			if req.ReadData, err = scheduleReadData(sf.readData); err != nil {
				return err
			}
		}
		if req.JitterSeconds, err = jitterSeconds(sf.jitter); err != nil {
			return err
		}
		c, err := a.client()
		if err != nil {
			return err
		}
		s, err := c.CreateSchedule(ctx, req)
		if err != nil {
			return err
		}
		a.warn(s.Warnings)
		return a.print(s, func() {
			names := a.volumeNames(ctx, c, s)
			fmt.Fprintf(a.stdout, "created schedule %s (%s): %s; %s\n", s.Name, s.ID, scheduleSummary(s, names), runNote(s))
		})
	})
	cmd.Flags().StringVar(&action, "action", "", "what each run does: snapshot, backup or verify")
	sf.add(cmd)
	cmd.Flags().BoolVar(&disabled, "disabled", false, "make it disabled: it does not run until enabled")
	_ = cmd.MarkFlagRequired("action")
	return cmd
}

// warn prints the warnings of an answer to stderr.
func (a *app) warn(warnings []string) {
	for _, w := range warnings {
		fmt.Fprintf(a.stderr, "warning: %s\n", w)
	}
}

func (a *app) scheduleUpdateCommand() *cobra.Command {
	var sf scheduleFlags
	var name string
	var enable, disable, dryRun bool
	cmd := &cobra.Command{
		Use:   "update NAME [--name NEW] [--enable|--disable] [the settings of create, all optional] [--dry-run]",
		Short: "Change a schedule (only the flags given); --dry-run shows what its retention would then remove",
		Long: `Change a schedule: only the settings given change. The --keep-* flags replace the
whole retention of a backup schedule. A new frequency, zone, jitter or enabling counts
from now: earlier slots do not run late. Renaming changes nothing else: what the
schedule made stays its own.

--dry-run changes nothing and lists exactly what the schedule's retention would
remove now with the new settings, and how much it keeps.`,
		Args: cobra.ExactArgs(1),
	}
	cmd.RunE = a.run(func(ctx context.Context, args []string) error {
		changed := cmd.Flags().Changed
		var req apitypes.ScheduleUpdate
		var err error
		if changed("name") {
			req.Name = &name
		}
		switch {
		case changed("enable") && changed("disable"):
			return core.Invalid("give --enable or --disable, not both")
		case changed("enable"):
			req.Enabled = &enable
		case changed("disable"):
			on := !disable
			req.Enabled = &on
		}
		if req.Frequency, err = sf.frequency(cmd, false); err != nil {
			return err
		}
		if req.Volumes, req.Selector, err = sf.target(cmd); err != nil {
			return err
		}
		if req.Retention, err = sf.retention(cmd); err != nil {
			return err
		}
		if changed("tz") {
			req.TZ = &sf.tz
		}
		if changed("keep") {
			req.Keep = &sf.keep
		}
		if changed("repository") {
			req.Repository = &sf.repository
		}
		if changed("read-data") {
			pct, err := scheduleReadData(sf.readData)
			if err != nil {
				return err
			}
			req.ReadData = &pct
		}
		if changed("jitter") {
			j, err := jitterSeconds(sf.jitter)
			if err != nil {
				return err
			}
			req.JitterSeconds = &j
		}
		if !dryRun && emptyUpdate(req) {
			return core.Invalid("nothing to change: give the settings to change (see --help)")
		}
		c, err := a.client()
		if err != nil {
			return err
		}
		if dryRun {
			p, err := c.RetentionPreview(ctx, args[0], &req)
			if err != nil {
				return err
			}
			return a.print(p, func() { a.printPreview(p) })
		}
		s, err := c.UpdateSchedule(ctx, args[0], req)
		if err != nil {
			return err
		}
		a.warn(s.Warnings)
		return a.print(s, func() {
			names := a.volumeNames(ctx, c, s)
			fmt.Fprintf(a.stdout, "updated schedule %s: %s; %s\n", s.Name, scheduleSummary(s, names), runNote(s))
		})
	})
	cmd.Flags().StringVar(&name, "name", "", "rename the schedule")
	sf.add(cmd)
	cmd.Flags().BoolVar(&enable, "enable", false, "let the schedule run again (from its next time after now)")
	cmd.Flags().BoolVar(&disable, "disable", false, "stop the schedule from running (it and what it made stay)")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "change nothing: list what the retention would remove with these settings")
	return cmd
}

// emptyUpdate reports whether u changes nothing.
func emptyUpdate(u apitypes.ScheduleUpdate) bool {
	return u.Name == nil && u.Volumes == nil && u.Selector == nil && u.Frequency == nil && u.TZ == nil && u.Keep == nil &&
		u.Retention == nil && u.Repository == nil && u.ReadData == nil && u.Enabled == nil && u.JitterSeconds == nil
}

func (a *app) scheduleListCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "list",
		Aliases: []string{"ls"},
		Short:   "List the project's schedules",
		Args:    cobra.NoArgs,
		RunE: a.run(func(ctx context.Context, _ []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ss, err := c.AllSchedules(ctx)
			if err != nil {
				return err
			}
			return a.print(ss, func() {
				names := a.volumeNames(ctx, c, ss...)
				rows := make([][]string, 0, len(ss))
				for _, s := range ss {
					rows = append(rows, []string{s.Name, s.Action, scheduleTarget(s, names), scheduleWhen(s), scheduleKeep(s),
						showTimePtr(s.NextRun), yesNo(s.Enabled)})
				}
				table(a.stdout, []string{"NAME", "ACTION", "TARGET", "WHEN", "KEEP", "NEXT RUN", "ENABLED"}, rows)
			})
		}),
	}
}

func (a *app) scheduleShowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "show NAME",
		Short: "Show a schedule, with its next run and the last slot it handled",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			s, err := c.GetSchedule(ctx, args[0])
			if err != nil {
				return err
			}
			return a.print(s, func() {
				names := a.volumeNames(ctx, c, s)
				kv := []string{
					"name", s.Name,
					"id", s.ID,
					"action", s.Action,
					"target", scheduleTarget(s, names),
					"when", scheduleWhen(s),
					"keep", scheduleKeep(s),
				}
				if s.Action != apitypes.ScheduleSnapshot {
					kv = append(kv, "repository", orDash(s.Repository))
				}
				if s.Action == apitypes.ScheduleVerify {
					kv = append(kv, "read data", readDataText(s.ReadData))
				}
				jitter := "none"
				if s.JitterSeconds > 0 {
					jitter = "up to " + (time.Duration(s.JitterSeconds) * time.Second).String()
				}
				kv = append(kv,
					"jitter", jitter,
					"enabled", yesNo(s.Enabled),
					"next run", nextRun(s),
					"last slot", showTimePtr(s.LastSlot),
					"created", showTime(s.CreatedAt),
					"updated", showTime(s.UpdatedAt),
				)
				fields(a.stdout, kv...)
			})
		}),
	}
}

func (a *app) scheduleDeleteCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "delete NAME",
		Aliases: []string{"rm"},
		Short:   "Delete a schedule and its history (the snapshots and backups it made stay, as if made by hand)",
		Args:    cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			if err := c.DeleteSchedule(ctx, args[0]); err != nil {
				return err
			}
			// The API answers 204 without a body: nothing to print as JSON.
			if !a.json() {
				fmt.Fprintf(a.stdout, "deleted schedule %s (what it made stays)\n", args[0])
			}
			return nil
		}),
	}
}

func (a *app) scheduleRunNowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "run-now NAME",
		Short: "Run a schedule once now, outside its times; prints the tasks started without waiting for them",
		Long: `Run a schedule once now, as at one of its times, on the volumes it targets now
(its next run does not move). It prints the runs started, one per volume (or one for
a verify of the whole repository), with their tasks, and does not wait for them:
follow a task with ` + "`cairn task wait ID`" + ` and the runs with ` + "`cairn schedule history NAME`" + `.
With --output json it prints the runs.`,
		Args: cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			runs, err := c.RunSchedule(ctx, args[0])
			if err != nil {
				return err
			}
			return a.print(runs, func() {
				if len(runs) == 0 {
					fmt.Fprintf(a.stdout, "schedule %s started nothing\n", args[0])
					return
				}
				names := a.runVolumeNames(ctx, c, runs)
				for _, r := range runs {
					what := "the repository"
					if r.VolumeID != "" {
						what = "volume " + volumeName(r.VolumeID, names)
					}
					line := fmt.Sprintf("%s: %s", what, r.State)
					if r.TaskID != "" {
						line += ", task " + r.TaskID
					}
					if r.Message != "" {
						line += " (" + r.Message + ")"
					}
					fmt.Fprintln(a.stdout, line)
				}
			})
		}),
	}
}

func (a *app) scheduleNextCommand() *cobra.Command {
	var count int
	cmd := &cobra.Command{
		Use:   "next NAME [--count N]",
		Short: "Print a schedule's next run times, one per line (RFC 3339, in its zone)",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			if count < 1 {
				return core.Invalid("invalid --count %d: give 1 or more", count)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			n, err := c.NextRuns(ctx, args[0], count)
			if err != nil {
				return err
			}
			return a.print(n, func() {
				if len(n.Runs) == 0 {
					fmt.Fprintf(a.stderr, "schedule %s is disabled: it has no next run\n", n.Schedule)
				}
				for _, t := range n.Runs {
					fmt.Fprintln(a.stdout, t)
				}
			})
		}),
	}
	cmd.Flags().IntVar(&count, "count", 5, "how many run times (at most 100)")
	return cmd
}

func (a *app) scheduleHistoryCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "history NAME",
		Short: "List a schedule's runs, newest first (missed and skipped slots too)",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			runs, err := c.ScheduleHistory(ctx, args[0])
			if err != nil {
				return err
			}
			return a.print(runs, func() {
				names := a.runVolumeNames(ctx, c, runs)
				rows := make([][]string, 0, len(runs))
				for _, r := range runs {
					vol := "-"
					if r.VolumeID != "" {
						vol = volumeName(r.VolumeID, names)
					}
					rows = append(rows, []string{showTimePtr(r.Slot), vol, r.State, strconv.Itoa(r.Attempt), orDash(r.TaskID), orDash(r.Message)})
				}
				table(a.stdout, []string{"SLOT", "VOLUME", "STATE", "ATTEMPT", "TASK", "MESSAGE"}, rows)
			})
		}),
	}
}

func (a *app) scheduleRetentionPreviewCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "retention-preview NAME",
		Short: "List exactly what the schedule's retention would remove now, and how much it keeps",
		Args:  cobra.ExactArgs(1),
		RunE: a.run(func(ctx context.Context, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			p, err := c.RetentionPreview(ctx, args[0], nil)
			if err != nil {
				return err
			}
			return a.print(p, func() { a.printPreview(p) })
		}),
	}
}

// printPreview prints a retention preview for people.
func (a *app) printPreview(p apitypes.RetentionPreview) {
	if len(p.Remove) == 0 {
		fmt.Fprintln(a.stdout, "would remove: nothing")
	} else {
		fmt.Fprintln(a.stdout, "would remove:")
		rows := make([][]string, 0, len(p.Remove))
		for _, it := range p.Remove {
			id := it.Name
			if id == "" {
				id = it.ID
			}
			rows = append(rows, []string{it.Kind, orDash(it.Volume), id, showTime(it.CreatedAt)})
		}
		table(a.stdout, []string{"KIND", "VOLUME", "NAME/ID", "CREATED"}, rows)
	}
	fmt.Fprintf(a.stdout, "keeps %d\n", len(p.Keep))
}

// volumeNames maps the ids of the volumes the schedules name to the
// volumes' names. It is only for display: without an answer, ids are shown.
func (a *app) volumeNames(ctx context.Context, c *client.Client, ss ...apitypes.Schedule) map[string]string {
	need := false
	for _, s := range ss {
		need = need || len(s.Volumes) > 0
	}
	if !need {
		return nil
	}
	return allVolumeNames(ctx, c)
}

// runVolumeNames is volumeNames for the volumes of runs.
func (a *app) runVolumeNames(ctx context.Context, c *client.Client, runs []apitypes.ScheduleRun) map[string]string {
	for _, r := range runs {
		if r.VolumeID != "" {
			return allVolumeNames(ctx, c)
		}
	}
	return nil
}

func allVolumeNames(ctx context.Context, c *client.Client) map[string]string {
	vols, err := c.AllVolumes(ctx)
	if err != nil {
		return nil
	}
	names := make(map[string]string, len(vols))
	for _, v := range vols {
		names[v.ID] = v.Name
	}
	return names
}

// volumeName is a volume's name, or its shortened id when it is unknown
// (a volume deleted since).
func volumeName(id string, names map[string]string) string {
	if n, ok := names[id]; ok {
		return n
	}
	return shortID(id)
}

// scheduleTarget says what a schedule runs on.
func scheduleTarget(s apitypes.Schedule, names map[string]string) string {
	switch {
	case len(s.Selector) > 0:
		return "selector " + selectorText(s.Selector)
	case len(s.Volumes) > 0:
		out := make([]string, len(s.Volumes))
		for i, id := range s.Volumes {
			out[i] = volumeName(id, names)
		}
		return strings.Join(out, ",")
	case s.Action == apitypes.ScheduleVerify:
		return "repository " + orDash(s.Repository)
	}
	return "-"
}

func selectorText(sel map[string]string) string {
	parts := make([]string, 0, len(sel))
	for k, v := range sel {
		parts = append(parts, k+"="+v)
	}
	sort.Strings(parts)
	return strings.Join(parts, ",")
}

// scheduleWhen says when a schedule runs, e.g. "daily 02:30 Europe/Berlin".
func scheduleWhen(s apitypes.Schedule) string {
	f := s.Frequency
	var when string
	switch f.Kind {
	case schedule.KindDaily:
		when = "daily " + f.Time
	case schedule.KindWeekly:
		when = "weekly " + f.Weekday + " " + f.Time
	case schedule.KindMonthly:
		when = fmt.Sprintf("monthly day %d %s", f.Day, f.Time)
	case schedule.KindCron:
		when = "cron " + f.Expr
	default:
		when = f.Kind
	}
	tz := s.TZ
	if tz == "" {
		tz = "UTC"
	}
	return when + " " + tz
}

// scheduleKeep says what a schedule keeps: "keep 7" or its retention.
func scheduleKeep(s apitypes.Schedule) string {
	switch {
	case s.Action == apitypes.ScheduleSnapshot:
		return fmt.Sprintf("keep %d", s.Keep)
	case s.Retention != nil:
		return retentionText(*s.Retention)
	}
	return "-"
}

// retentionText summarises a retention, e.g. "daily 7, weekly 4, within 14d".
func retentionText(r apitypes.Retention) string {
	var parts []string
	for _, p := range []struct {
		name string
		n    int
	}{{"last", r.KeepLast}, {"hourly", r.KeepHourly}, {"daily", r.KeepDaily}, {"weekly", r.KeepWeekly},
		{"monthly", r.KeepMonthly}, {"yearly", r.KeepYearly}} {
		if p.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", p.name, p.n))
		}
	}
	if r.KeepWithin != "" {
		parts = append(parts, "within "+r.KeepWithin)
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, ", ")
}

// scheduleSummary is a schedule in one line: action, target, when, keep.
func scheduleSummary(s apitypes.Schedule, names map[string]string) string {
	out := s.Action + " " + scheduleTarget(s, names) + ", " + scheduleWhen(s)
	if k := scheduleKeep(s); k != "-" {
		out += ", " + k
	}
	if s.Action == apitypes.ScheduleVerify && s.ReadData > 0 {
		out += ", read data " + readDataText(s.ReadData)
	}
	return out
}

func nextRun(s apitypes.Schedule) string {
	if !s.Enabled {
		return "- (disabled)"
	}
	return showTimePtr(s.NextRun)
}

// runNote is "next run TIME", or "disabled".
func runNote(s apitypes.Schedule) string {
	if !s.Enabled {
		return "disabled"
	}
	return "next run " + showTimePtr(s.NextRun)
}

func readDataText(pct float64) string {
	if pct == 0 {
		return "none (structure only)"
	}
	return strconv.FormatFloat(pct, 'f', -1, 64) + "%"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
