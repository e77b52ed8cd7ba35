// Command cairn is one binary for the whole product: `cairn server` (control
// plane), `cairn node` (host worker) and the CLI client (`cairn <noun> <verb>`).
// This file only parses the command line and wires concrete types together.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/cli"
	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/node"
	"github.com/cairn-backup/cairn/internal/server"
)

func main() {
	root := cli.NewRoot(serverCommand(), nodeCommand())
	os.Exit(cli.Main(root))
}

// signalContext is the process's root context, cancelled by SIGINT or SIGTERM.
func signalContext() (context.Context, context.CancelFunc) {
	return signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
}

func newLogger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("invalid --log-level %q: use debug, info, warn or error", level)
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}

func serverCommand() *cobra.Command {
	var o server.Options
	var logLevel string
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run the control plane: REST API, metadata, scheduler and (by default) a node for this host",
		Long: `Run the cairn server. With no flags it is the embedded default: SQLite metadata,
volumes and helper processes in ./cairn-data, the API on 127.0.0.1:7420, and a node
worker for this host. The first start prints the admin token once and writes it to
DATA/admin.token (mode 0600), and creates DATA/pki, the certificate authority that
signs the certificates of TLS exports (beyond loopback, or with --export-tls).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			o.Logger = log
			o.Out = func(format string, args ...any) { fmt.Fprintf(cmd.OutOrStdout(), format, args...) }
			ctx, stop := signalContext()
			defer stop()
			s, err := server.Start(ctx, o)
			if err != nil {
				return err
			}
			return s.Wait(ctx)
		},
	}
	f := cmd.Flags()
	f.StringVar(&o.DataDir, "data", "cairn-data", "data directory (metadata, volumes, helper processes)")
	f.StringVar(&o.Listen, "listen", "127.0.0.1:7420", "address of the API; beyond loopback it needs --tls-cert and --tls-key")
	f.StringVar(&o.TLSCert, "tls-cert", "", "PEM certificate for the API")
	f.StringVar(&o.TLSKey, "tls-key", "", "PEM private key for the API")
	f.StringVar(&o.ExportAddress, "export-address", "127.0.0.1", "address NBD exports listen on; beyond loopback exports require TLS")
	f.BoolVar(&o.ExportTLS, "export-tls", false, "require TLS on new exports even on loopback (certificates from the server's CA in DATA/pki)")
	f.IntVar(&o.MaxSnapshots, "max-snapshots-per-volume", 1000, "most user snapshots one volume may have")
	f.DurationVar(&o.ScheduleGrace, "schedule-grace", 6*time.Hour, "a schedule slot missed while the server was down still runs once at start if it is at most this old")
	f.BoolVar(&o.NoNode, "no-node", false, "do not run a node for this host")
	f.StringVar(&o.NodeName, "node-name", "local", "name of this host's node")
	f.BoolVar(&o.RebuildMetadata, "rebuild-metadata", false, "recreate volume and snapshot rows from the sidecar files in DATA/volumes, then start")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}

func nodeCommand() *cobra.Command {
	var dataDir, exportAddr, logLevel string
	var parallel int
	cmd := &cobra.Command{
		Use:   "node",
		Short: "Run a host worker that claims and runs this host's tasks (or manage nodes: list, show, add)",
		Long: `Run the node worker for this host. Create its token first with ` + "`cairn node add NAME`" + `,
then run: cairn node --server URL --token NODE_TOKEN --data DIR`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := newLogger(logLevel)
			if err != nil {
				return err
			}
			srv, _ := cmd.Flags().GetString("server")
			tok, _ := cmd.Flags().GetString("token")
			if tok == "" {
				tok = os.Getenv(cli.EnvToken)
			}
			if env := os.Getenv(cli.EnvServer); env != "" && !cmd.Flags().Changed("server") {
				srv = env
			}
			if tok == "" {
				return fmt.Errorf("the node needs its token: cairn node --server URL --token NODE_TOKEN (from `cairn node add NAME`)")
			}
			for _, d := range []string{dataDir, dataDir + "/volumes", dataDir + "/run"} {
				if err := os.MkdirAll(d, 0o700); err != nil {
					return fmt.Errorf("data directory: %w", err)
				}
			}
			ctx, stop := signalContext()
			defer stop()
			w := &node.Worker{Server: client.New(srv, tok), DataDir: dataDir, Parallel: parallel, Logger: log, ExportAddress: exportAddr}
			fmt.Fprintf(cmd.OutOrStdout(), "cairn node serving %s from %s\n", srv, dataDir)
			err = w.Run(ctx)
			if ctx.Err() != nil {
				return nil
			}
			return err
		},
	}
	f := cmd.Flags()
	f.StringVar(&dataDir, "data", "cairn-node-data", "data directory of this node's volumes")
	f.StringVar(&exportAddr, "export-address", "127.0.0.1", "address NBD exports listen on")
	f.IntVar(&parallel, "parallel", 4, "tasks on different volumes run at once")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	return cmd
}
