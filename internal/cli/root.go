// Package cli is cairn's command line client: `cairn <noun> <verb>`, one file
// per command group, talking to the server through package client.
//
// Output follows DESIGN 2b: plain text for people, or with --output json exactly
// the API's JSON (the resulting resource of an action, the task with --no-wait,
// every item of a list as one array). Errors go to stderr as "cairn: <message>"
// and become exit codes in exactly one place, ExitCode.
package cli

import (
	"context"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/core"
)

// DefaultServer is where the CLI looks for the server when nothing says otherwise.
const DefaultServer = "http://127.0.0.1:7420"

// Environment variables read by the CLI (after the flags, before the config file).
const (
	EnvServer  = "CAIRN_SERVER"
	EnvToken   = "CAIRN_TOKEN"
	EnvProject = "CAIRN_PROJECT"
)

// DefaultAdminTokenFile is where the embedded server writes its admin token
// (its default data directory, relative to the working directory); the CLI
// falls back to it so the quick start works without `cairn login`.
const DefaultAdminTokenFile = "cairn-data/admin.token"

// Output modes.
const (
	outputPlain = "plain"
	outputJSON  = "json"
)

// app holds the global flags and the streams of one command run.
type app struct {
	server  string
	token   string
	project string
	output  string
	noWait  bool

	root   *cobra.Command
	stdout io.Writer
	stderr io.Writer
}

// NewRoot returns the `cairn` command with every client command group. extra
// commands (cmd/cairn's `server` and `node`) are added beside them; an extra
// command with the name of a built-in group (`node`) takes the group's
// subcommands, so `cairn node` runs the extra command and `cairn node list`
// the client's.
func NewRoot(extra ...*cobra.Command) *cobra.Command {
	a := &app{}
	root := &cobra.Command{
		Use:           "cairn",
		Short:         "Snapshots, backups and exports of KVM qcow2 volumes",
		SilenceErrors: true,
		SilenceUsage:  true,
	}
	a.root = root
	f := root.PersistentFlags()
	f.StringVar(&a.server, "server", DefaultServer, "server URL (env "+EnvServer+")")
	f.StringVar(&a.token, "token", "", "API token (env "+EnvToken+")")
	f.StringVar(&a.project, "project", "", "act in this project (admin only; env "+EnvProject+")")
	f.StringVarP(&a.output, "output", "o", outputPlain, "output format: plain or json")
	f.BoolVar(&a.noWait, "no-wait", false, "do not wait for the task; print it at once")

	root.AddCommand(
		a.loginCommand(),
		a.logoutCommand(),
		a.volumeCommand(),
		a.snapshotCommand(),
		a.taskCommand(),
		a.projectCommand(),
		a.tokenCommand(),
		a.nodeCommand(),
		a.backupCommand(),
		a.scheduleCommand(),
		a.repositoryCommand(),
		a.repoCommand(),
	)
	for _, e := range extra {
		if own := findChild(root, e.Name()); own != nil {
			root.RemoveCommand(own)
			e.AddCommand(own.Commands()...)
		}
		root.AddCommand(e)
	}
	return root
}

func findChild(c *cobra.Command, name string) *cobra.Command {
	for _, sub := range c.Commands() {
		if sub.Name() == name {
			return sub
		}
	}
	return nil
}

// run adapts a command body: it checks the global flags, takes the command's
// streams and context, and hands the body its arguments.
func (a *app) run(body func(ctx context.Context, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.stdout = cmd.OutOrStdout()
		a.stderr = cmd.ErrOrStderr()
		switch a.output {
		case outputPlain, outputJSON:
		default:
			return core.Invalid("invalid --output %q: use plain or json", a.output)
		}
		return body(cmd.Context(), args)
	}
}

func (a *app) json() bool { return a.output == outputJSON }

// settings are the resolved connection settings.
type settings struct {
	server, token, project string
}

// resolve applies the precedence flag > environment > config file > the
// embedded server's admin token file (token only).
func (a *app) resolve(useConfig bool) (settings, error) {
	var s settings
	var cfg config
	if useConfig {
		c, err := loadConfig()
		if err != nil {
			return s, err
		}
		cfg = c
	}
	flags := a.root.PersistentFlags()
	pick := func(flag, flagValue, env, fromConfig string) string {
		if flags.Changed(flag) {
			return flagValue
		}
		if v := os.Getenv(env); v != "" {
			return v
		}
		return fromConfig
	}
	s.server = pick("server", a.server, EnvServer, cfg.Server)
	if s.server == "" {
		s.server = DefaultServer
	}
	s.token = pick("token", a.token, EnvToken, cfg.Token)
	if s.token == "" {
		if b, err := os.ReadFile(DefaultAdminTokenFile); err == nil {
			s.token = strings.TrimSpace(string(b))
		}
	}
	s.project = pick("project", a.project, EnvProject, cfg.Project)
	return s, nil
}

// client returns an API client with the resolved settings.
func (a *app) client() (*client.Client, error) {
	s, err := a.resolve(true)
	if err != nil {
		return nil, err
	}
	if s.token == "" {
		return nil, core.Unauthorized("no token: run `cairn login --server URL --token TOKEN`, set %s or pass --token", EnvToken)
	}
	return newClient(s), nil
}

func newClient(s settings) *client.Client {
	var opts []client.Option
	if s.project != "" {
		opts = append(opts, client.WithProject(s.project))
	}
	return client.New(s.server, s.token, opts...)
}
