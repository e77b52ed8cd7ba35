package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/spf13/cobra"
	"golang.org/x/sys/unix"

	"github.com/cairn-backup/cairn/internal/core"
)

// Exit codes (DESIGN 2b).
const (
	ExitOK           = 0
	ExitError        = 1
	ExitUsage        = 2
	ExitNotFound     = 3
	ExitConflict     = 4
	ExitTaskFailed   = 5
	ExitUnauthorized = 6
	ExitCorrupt      = 7
)

// usageError marks an error of the command line itself (unknown command or
// flag, wrong number of arguments), found by cobra before any command ran.
type usageError struct{ err error }

func (e *usageError) Error() string { return e.err.Error() }
func (e *usageError) Unwrap() error { return e.err }

// runError marks an error returned by a command's body, as opposed to cobra's
// own errors, which are all usage errors.
type runError struct{ err error }

func (e *runError) Error() string { return e.err.Error() }
func (e *runError) Unwrap() error { return e.err }

// ExitCode is the one place that turns an error into an exit code.
func ExitCode(err error) int {
	if err == nil {
		return ExitOK
	}
	var u *usageError
	if errors.As(err, &u) {
		return ExitUsage
	}
	switch core.KindOf(err) {
	case core.KindInvalid:
		return ExitUsage
	case core.KindNotFound:
		return ExitNotFound
	case core.KindConflict:
		return ExitConflict
	case core.KindTaskFailed:
		return ExitTaskFailed
	case core.KindUnauthorized, core.KindForbidden:
		return ExitUnauthorized
	case core.KindCorrupt:
		return ExitCorrupt
	}
	return ExitError
}

// Main runs root with a context cancelled by SIGINT or SIGTERM, prints an
// error as "cairn: <message>" on root's stderr and returns the exit code.
//
// A command stopped by the signal exits 128 + its number (130 for SIGINT,
// 143 for SIGTERM) with "cairn: interrupted by SIGINT"; a second signal
// kills the process at once.
func Main(root *cobra.Command) int {
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case s := <-sigs:
			signal.Stop(sigs) // the next one takes its default action
			cancel(interrupted{s.(syscall.Signal)})
		case <-ctx.Done():
		}
	}()
	markRunErrors(root)
	cmd, err := root.ExecuteContextC(ctx)
	if err == nil {
		return ExitOK
	}
	var intr interrupted
	if errors.As(context.Cause(ctx), &intr) { // whatever failed, failed because of it
		fmt.Fprintf(root.ErrOrStderr(), "cairn: interrupted by %s\n", unix.SignalName(intr.sig))
		var sw *stoppedWaiting
		if errors.As(err, &sw) {
			fmt.Fprintf(root.ErrOrStderr(), "cairn: %s\n", sw)
		}
		return 128 + int(intr.sig)
	}
	var r *runError
	if errors.As(err, &r) {
		err = r.err
	} else {
		err = &usageError{err}
	}
	if cmd == nil {
		cmd = root
	}
	printError(root.ErrOrStderr(), cmd, err)
	return ExitCode(err)
}

// interrupted is the cause of the context of a command stopped by a signal.
type interrupted struct{ sig syscall.Signal }

func (i interrupted) Error() string { return "interrupted by " + unix.SignalName(i.sig) }

// markRunErrors wraps the bodies of every command so that Main can tell their
// errors from cobra's.
func markRunErrors(c *cobra.Command) {
	const marked = "cairn.marked"
	if c.Annotations[marked] == "" {
		if c.Annotations == nil {
			c.Annotations = map[string]string{}
		}
		c.Annotations[marked] = "yes"
		mark := func(f func(*cobra.Command, []string) error) func(*cobra.Command, []string) error {
			if f == nil {
				return nil
			}
			return func(cmd *cobra.Command, args []string) error {
				if err := f(cmd, args); err != nil {
					return &runError{err}
				}
				return nil
			}
		}
		c.PersistentPreRunE = mark(c.PersistentPreRunE)
		c.PreRunE = mark(c.PreRunE)
		c.RunE = mark(c.RunE)
		c.PostRunE = mark(c.PostRunE)
		c.PersistentPostRunE = mark(c.PersistentPostRunE)
	}
	for _, sub := range c.Commands() {
		markRunErrors(sub)
	}
}

// genericCodes are the codes that say no more than the error's kind; other
// codes (nothing_to_revert, exported, name_taken ...) are printed in brackets.
var genericCodes = map[string]bool{
	"": true, "internal": true, "invalid": true, "not_found": true, "conflict": true,
	"unauthorized": true, core.CodeWrongPassword: true, "forbidden": true, "corrupt": true, "task_failed": true, "canceled": true,
}

func printError(w io.Writer, cmd *cobra.Command, err error) {
	msg := err.Error()
	var ce *core.Error
	if errors.As(err, &ce) && !genericCodes[ce.Code] {
		msg += " [" + ce.Code + "]"
	}
	fmt.Fprintf(w, "cairn: %s\n", msg)
	var u *usageError
	var ue *url.Error
	var ne net.Error
	repoCmd := cmd.CommandPath() == "cairn repo" || strings.HasPrefix(cmd.CommandPath(), "cairn repo ")
	switch {
	case errors.As(err, &u):
		fmt.Fprintf(w, "Run '%s --help' for usage.\n", cmd.CommandPath())
	case repoCmd && core.CodeOf(err) == core.CodeWrongPassword:
		fmt.Fprintf(w, "Check the password (%s, %s or --password-file).\n", EnvPassword, EnvPasswordFile)
	case repoCmd:
	case core.KindOf(err) == core.KindUnauthorized:
		fmt.Fprintf(w, "Check --token, %s or `cairn login`.\n", EnvToken)
	case errors.Is(err, context.Canceled):
	case errors.As(err, &ue) || errors.As(err, &ne):
		fmt.Fprintf(w, "Cannot reach the server: is it running, and is --server (or %s) right?\n", EnvServer)
	}
}
