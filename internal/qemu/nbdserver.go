package qemu

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
)

// SnapshotServerConfig describes a qemu-nbd serving one internal snapshot.
type SnapshotServerConfig struct {
	Image  string
	Tag    string // the internal snapshot to serve
	RunDir string // holds ID.pid
	// ID names the server's pidfile in RunDir: letters, digits, '.', '_', '-'.
	ID         string
	Address    string // default 127.0.0.1
	Port       int    // 0 picks a free port; otherwise exactly this one
	ExportName string
	// TLS, when set, makes the server require TLS and admit one client
	// identity; nil serves plain NBD.
	TLS *TLSServer
}

// SnapshotServer is a running qemu-nbd serving one internal snapshot
// read-only to any number of clients, its child process.
//
// It opens the image without taking QEMU's file lock (file.locking=off:
// qemu-nbd has no -U), so it can serve a snapshot while a qemu-storage-daemon
// or a VM holds the image read-write. That is safe because a snapshot's tables
// and data never change once taken; deleting the snapshot while it is served
// is NOT safe, and callers must stop the server first. Methods may be called
// concurrently. The server dies with the node (parent death signal).
//
// QEMU 7.2 limitation: qemu-nbd exports a loaded snapshot with the image's
// CURRENT virtual size, not the size the snapshot recorded. When the volume
// grew after the snapshot, clients see zeros past the snapshot's end; when it
// is now smaller (an older, smaller snapshot was applied), the snapshot's
// tail is not reachable through this server.
type SnapshotServer struct {
	cfg  SnapshotServerConfig
	proc *helperProcess

	stopOnce sync.Once
	stopErr  error
}

// StartSnapshotServer starts qemu-nbd for cfg and returns once it serves the
// snapshot. ctx bounds the start-up only. A tag the image does not
// hold makes qemu-nbd exit, and the error carries its message. On error no
// process is left running.
func StartSnapshotServer(ctx context.Context, cfg SnapshotServerConfig) (*SnapshotServer, error) {
	if cfg.Image == "" || cfg.ExportName == "" || cfg.Tag == "" {
		return nil, core.Invalid("snapshot server needs an image, a tag and an export name")
	}
	runDir, err := helperPaths(cfg.RunDir, cfg.ID)
	if err != nil {
		return nil, err
	}
	cfg.RunDir = runDir
	if cfg.Image, err = filepath.Abs(cfg.Image); err != nil {
		return nil, err
	}
	if cfg.Address == "" {
		cfg.Address = "127.0.0.1"
	}
	var tlsArgs []string
	if cfg.TLS != nil {
		if tlsArgs, err = cfg.TLS.objectArgs(); err != nil {
			return nil, err
		}
		tlsArgs = append(tlsArgs, "--tls-creds", tlsCredsID, "--tls-authz", tlsAuthzID)
	}
	ss := &SnapshotServer{cfg: cfg}
	pidfile := filepath.Join(runDir, cfg.ID+".pid")
	port, err := startOnPort(ctx, cfg.Address, cfg.Port, func(port int) error {
		args := append(slices.Clone(tlsArgs),
			"--persistent",  // -t: keep serving after the last client leaves
			"--read-only",   // -r
			"--shared", "0", // -e 0: any number of clients
			"--export-name", cfg.ExportName,
			"--bind", cfg.Address,
			"--port", strconv.Itoa(port),
			// snapshot.name= selects by name only, never by numeric id.
			"--load-snapshot", "snapshot.name="+cfg.Tag,
			"--pid-file", pidfile,
			"--image-opts", "driver=qcow2,file.driver=file,file.locking=off,file.filename="+escapeOpt(cfg.Image),
		)
		proc, err := startHelper("qemu-nbd", args, pidfile)
		if err != nil {
			return err
		}
		err = proc.waitReady(ctx, func(ctx context.Context) error {
			return probeNBD(ctx, net.JoinHostPort(cfg.Address, strconv.Itoa(port)))
		})
		if err != nil {
			proc.kill()
			return err
		}
		ss.proc = proc
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("starting qemu-nbd for snapshot %s of %s: %w", cfg.Tag, cfg.Image, err)
	}
	ss.cfg.Port = port
	return ss, nil
}

// URI is the NBD URI clients connect to: nbd://ADDRESS:PORT/NAME, or
// nbds://... when the server requires TLS.
func (ss *SnapshotServer) URI() string {
	return nbdURI(ss.cfg.Address, ss.cfg.Port, ss.cfg.ExportName, ss.cfg.TLS != nil)
}

// Port is the TCP port the server listens on.
func (ss *SnapshotServer) Port() int { return ss.cfg.Port }

// Config is the configuration the server runs with (absolute paths, the
// bound port).
func (ss *SnapshotServer) Config() SnapshotServerConfig { return ss.cfg }

// Pid is the server's process id.
func (ss *SnapshotServer) Pid() int { return ss.proc.pid() }

// Done is closed when the server process has exited, for whatever reason.
func (ss *SnapshotServer) Done() <-chan struct{} { return ss.proc.done }

// Stop ends the server (SIGTERM, SIGKILL after a timeout or when ctx ends),
// disconnecting its clients, and removes the pidfile. It is idempotent and
// safe to call concurrently; an error means the server had to be killed or
// had died before.
func (ss *SnapshotServer) Stop(ctx context.Context) error {
	ss.stopOnce.Do(func() {
		var problem error
		if ss.proc.exited() {
			problem = fmt.Errorf("it had exited: %w", ss.proc.exitError())
		} else {
			_ = ss.proc.cmd.Process.Signal(syscall.SIGTERM)
			problem = stopHelper(ctx, ss.proc, 5*time.Second)
			if problem != nil && isSigterm(ss.proc) {
				problem = nil // qemu-nbd ends on SIGTERM by dying of it
			}
		}
		ss.proc.kill() // no-op once exited; removes the pidfile
		_ = os.Remove(ss.proc.pidfile)
		if problem != nil {
			ss.stopErr = fmt.Errorf("stopping qemu-nbd for snapshot %s of %s: %w", ss.cfg.Tag, ss.cfg.Image, problem)
		}
	})
	return ss.stopErr
}

// isSigterm reports whether the exited helper ended by SIGTERM.
func isSigterm(h *helperProcess) bool {
	if h.cmd.ProcessState == nil {
		return false
	}
	ws, ok := h.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGTERM
}
