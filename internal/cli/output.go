package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/core"
)

// print writes v as JSON with --output json, and otherwise runs plain.
func (a *app) print(v any, plain func()) error {
	if a.json() {
		return writeJSON(a.stdout, v)
	}
	plain()
	return nil
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// table writes aligned columns: a header and one row per item.
func table(w io.Writer, header []string, rows [][]string) {
	var b strings.Builder
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	tw.Flush()
	for line := range strings.Lines(b.String()) { // no padding after an empty last column
		io.WriteString(w, strings.TrimRight(line, " \n")+"\n")
	}
}

// fields writes "key: value" lines with the values aligned.
func fields(w io.Writer, kv ...string) {
	tw := tabwriter.NewWriter(w, 0, 4, 1, ' ', 0)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(tw, "%s:\t%s\n", kv[i], kv[i+1])
	}
	tw.Flush()
}

// timeFormat is how times are shown to people, in local time.
const timeFormat = "2006-01-02 15:04:05"

func showTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format(timeFormat)
}

func showTimePtr(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return showTime(*t)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func shortID(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}

// groupCommand is a command that only holds subcommands: alone it prints its
// help; with an unknown subcommand it is a usage error.
func groupCommand(use, short string, aliases ...string) *cobra.Command {
	return &cobra.Command{
		Use:     use,
		Short:   short,
		Aliases: aliases,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
}

// act finishes an action whose request answered with task. With --no-wait it
// prints the task; otherwise it waits for it (with a progress bar) and hands
// the final task to done, which prints the resulting resource.
func (a *app) act(ctx context.Context, c *client.Client, task apitypes.Task, done func(apitypes.Task) error) error {
	if a.noWait {
		return a.print(task, func() {
			fmt.Fprintf(a.stdout, "task %s %s (%s); follow it with: cairn task wait %s\n", task.ID, task.State, task.Kind, task.ID)
		})
	}
	final, err := a.wait(ctx, c, task)
	if err != nil {
		return err
	}
	return done(final)
}

// wait follows a task to its end, drawing progress on a terminal's stderr.
func (a *app) wait(ctx context.Context, c *client.Client, task apitypes.Task) (apitypes.Task, error) {
	if apitypes.TaskDone(task.State) {
		return task, client.TaskError(task)
	}
	bar := a.newProgress(task.Kind)
	final, err := c.WaitTask(ctx, task.ID, bar.update)
	bar.finish()
	if err != nil && ctx.Err() != nil {
		return final, &stoppedWaiting{id: task.ID, err: err}
	}
	return final, err
}

// stoppedWaiting is the error of a wait for a task cut short: the task goes
// on in the server.
type stoppedWaiting struct {
	id  string
	err error
}

func (s *stoppedWaiting) Error() string {
	return fmt.Sprintf("stopped waiting; task %s goes on (follow it with: cairn task wait %s)", s.id, s.id)
}

func (s *stoppedWaiting) Unwrap() error { return s.err }

// progress draws a task's progress: bytes done/total when the total is known,
// a spinner otherwise. A nil *progress draws nothing.
type progress struct {
	w     io.Writer
	desc  string
	bar   *progressbar.ProgressBar
	total int64 // the bar's total; 0 for the spinner
}

// newProgress returns a progress drawer when stderr is a terminal and the
// output is plain, and nil otherwise.
func (a *app) newProgress(desc string) *progress {
	if a.json() {
		return nil
	}
	f, ok := a.stderr.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return nil
	}
	return &progress{w: f, desc: desc}
}

func (p *progress) update(t apitypes.Task) {
	if p == nil {
		return
	}
	if t.BytesTotal > 0 {
		if p.bar == nil || p.total == 0 {
			p.stop()
			p.bar = progressbar.NewOptions64(t.BytesTotal,
				progressbar.OptionSetWriter(p.w),
				progressbar.OptionSetDescription(p.desc),
				progressbar.OptionShowBytes(true),
				progressbar.OptionShowCount(),
				progressbar.OptionUseIECUnits(true),
				progressbar.OptionSetWidth(30),
				progressbar.OptionThrottle(100*time.Millisecond),
				progressbar.OptionClearOnFinish(),
			)
			p.total = t.BytesTotal
		} else if t.BytesTotal != p.total {
			p.bar.ChangeMax64(t.BytesTotal)
			p.total = t.BytesTotal
		}
		_ = p.bar.Set64(min(t.BytesDone, t.BytesTotal))
		return
	}
	if p.bar == nil {
		p.bar = progressbar.NewOptions64(-1,
			progressbar.OptionSetWriter(p.w),
			progressbar.OptionSetDescription(p.desc+" ("+t.State+")"),
			progressbar.OptionSpinnerType(14),
			progressbar.OptionSetElapsedTime(true),
			progressbar.OptionClearOnFinish(),
			progressbar.OptionSetRenderBlankState(true),
		)
		return
	}
	if p.total == 0 {
		p.bar.Describe(p.desc + " (" + t.State + ")")
	}
}

// stop ends the current bar and clears its line.
func (p *progress) stop() {
	if p.bar != nil {
		_ = p.bar.Finish()
		_ = p.bar.Clear()
		p.bar = nil
	}
}

func (p *progress) finish() {
	if p != nil {
		p.stop()
	}
}

// address is VOL@SNAP, split at the last '@'.
type address struct {
	volume, snapshot string
}

func (a address) String() string { return a.volume + "@" + a.snapshot }

// parseSnapshotAddress parses VOL@SNAP; anything else is a usage error.
func parseSnapshotAddress(s string) (address, error) {
	i := strings.LastIndexByte(s, '@')
	if i <= 0 || i == len(s)-1 {
		return address{}, core.Invalid("invalid snapshot address %q: use VOL@SNAP (volume and snapshot by name or id)", s)
	}
	return address{volume: s[:i], snapshot: s[i+1:]}, nil
}

// parseVolumeOrSnapshot parses VOL or VOL@SNAP; snapshot is empty for VOL.
func parseVolumeOrSnapshot(s string) (address, error) {
	if !strings.Contains(s, "@") {
		if s == "" {
			return address{}, core.Invalid("give a volume (VOL) or a snapshot (VOL@SNAP)")
		}
		return address{volume: s}, nil
	}
	return parseSnapshotAddress(s)
}

// parseSizeFlag parses a --size value.
func parseSizeFlag(s string) (int64, error) {
	n, err := core.ParseSize(s)
	if err != nil {
		return 0, fmt.Errorf("--size: %w", err)
	}
	return n, nil
}

// taskProgress renders a task's progress for tables.
func taskProgress(t apitypes.Task) string {
	if t.BytesTotal > 0 {
		return fmt.Sprintf("%d%% of %s", t.BytesDone*100/t.BytesTotal, core.FormatSize(t.BytesTotal))
	}
	return "-"
}
