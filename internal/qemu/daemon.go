package qemu

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
)

// Node names and ids inside a qemu-storage-daemon. One daemon holds one image.
const (
	daemonFileNode = "cairn-file"
	daemonDiskNode = "cairn-disk"
	daemonExportID = "cairn-export"
)

// DaemonConfig describes a qemu-storage-daemon holding one image with one NBD
// export on TCP.
type DaemonConfig struct {
	Image  string
	RunDir string // holds ID.pid and the QMP socket ID.qmp
	// ID names the daemon's files in RunDir: letters, digits, '.', '_', '-'.
	ID      string
	Address string // default 127.0.0.1
	// Port 0 picks a free port; any other port is used exactly (bind is
	// retried for a few seconds, as the previous holder may be exiting).
	Port       int
	ExportName string
	// Writable exports the image read-write to NBD clients. The daemon opens
	// the image read-write in any case, so that snapshots can be taken.
	Writable bool
	// TLS, when set, makes the NBD server require TLS and admit one client
	// identity; nil serves plain NBD.
	TLS *TLSServer
}

// TLSServer is the TLS side of an NBD server: QEMU's tls-creds-x509 object
// (endpoint=server, verify-peer=on: clients must present a certificate signed
// by the CA) and an authz-simple object that admits exactly one client
// identity. Checked with QEMU 7.2: qemu-storage-daemon takes them as
// "tls-creds" and "tls-authz" of --nbd-server, qemu-nbd as --tls-creds and
// --tls-authz; a client presenting another identity is refused during option
// negotiation ("TLS x509 authz check for CN=... is denied" on the helper's
// stderr), and a client without TLS is told "Option 0x7 not permitted before
// TLS".
type TLSServer struct {
	// Dir holds ca-cert.pem, server-cert.pem and server-key.pem, the file
	// names QEMU reads. It must stay in place while the server runs.
	Dir string
	// Identity is the distinguished name of the one client certificate
	// admitted, as QEMU prints it from GnuTLS: the attributes in the order
	// the certificate encodes them, joined by commas without spaces, e.g.
	// "CN=cairn-project-x" or "O=cairn,OU=proj,CN=x".
	Identity string
}

// Ids of the TLS objects inside a helper.
const (
	tlsCredsID = "cairn-tls"
	tlsAuthzID = "cairn-authz"
)

// objectArgs returns the --object arguments that create the TLS objects.
func (t *TLSServer) objectArgs() ([]string, error) {
	if t.Dir == "" || t.Identity == "" {
		return nil, core.Invalid("a TLS export needs a credentials directory and a client identity")
	}
	dir, err := filepath.Abs(t.Dir)
	if err != nil {
		return nil, err
	}
	return []string{
		"--object", "tls-creds-x509,id=" + tlsCredsID + ",endpoint=server,verify-peer=on,dir=" + escapeOpt(dir),
		"--object", "authz-simple,id=" + tlsAuthzID + ",identity=" + escapeOpt(t.Identity),
	}, nil
}

// StorageDaemon is a running qemu-storage-daemon, its child process.
//
// While it runs, it is the image's only writer (QEMU's lock keeps qemu-img
// out; use Info/Convert with shared). Snapshot create and delete, resize and
// flush go through its QMP monitor. Methods may be called concurrently; they
// run one at a time. The daemon dies with the node (parent death signal).
type StorageDaemon struct {
	cfg    DaemonConfig // absolute paths, Port as bound
	socket string
	proc   *helperProcess

	mu      sync.Mutex // serialises operations; guards qmp and stopped
	qmp     *QMP
	stopped bool
}

// maxSocketPath is the room in sockaddr_un.sun_path, terminator included.
const maxSocketPath = 108

// helperPaths validates a helper's RunDir and ID, creates RunDir, and returns
// the absolute RunDir.
func helperPaths(runDir, id string) (string, error) {
	if runDir == "" || id == "" {
		return "", core.Invalid("helper needs a run directory and an id")
	}
	if strings.Trim(id, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") != "" || strings.HasPrefix(id, ".") {
		return "", core.Invalid("helper id %q: use letters, digits, '.', '_' and '-'", id)
	}
	abs, err := filepath.Abs(runDir)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return "", fmt.Errorf("creating run directory: %w", err)
	}
	return abs, nil
}

// escapeOpt escapes a value for QEMU's comma-separated option syntax.
func escapeOpt(v string) string { return strings.ReplaceAll(v, ",", ",,") }

func mustJSON(v any) string {
	data, err := json.Marshal(v)
	if err != nil {
		panic(err) // only maps of strings, numbers and bools are marshalled
	}
	return string(data)
}

// StartStorageDaemon starts a qemu-storage-daemon for cfg and returns once its
// QMP monitor answers and its NBD port serves the export. ctx bounds the
// start-up only; the daemon then runs until Stop (or the node's death).
// On error no process is left running.
func StartStorageDaemon(ctx context.Context, cfg DaemonConfig) (*StorageDaemon, error) {
	if cfg.Image == "" || cfg.ExportName == "" {
		return nil, core.Invalid("storage daemon needs an image and an export name")
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
	sd := &StorageDaemon{cfg: cfg, socket: filepath.Join(runDir, cfg.ID+".qmp")}
	if len(sd.socket) >= maxSocketPath {
		return nil, core.Invalid("QMP socket path %s is longer than the %d bytes a unix socket allows: use a shorter data directory", sd.socket, maxSocketPath-1)
	}
	pidfile := filepath.Join(runDir, cfg.ID+".pid")

	var tlsArgs []string
	if cfg.TLS != nil {
		if tlsArgs, err = cfg.TLS.objectArgs(); err != nil {
			return nil, err
		}
	}

	port, err := startOnPort(ctx, cfg.Address, cfg.Port, func(port int) error {
		_ = os.Remove(sd.socket) // stale, from a killed run
		nbdServer := map[string]any{"addr": map[string]any{"type": "inet", "host": cfg.Address, "port": strconv.Itoa(port)}}
		if cfg.TLS != nil {
			nbdServer["tls-creds"], nbdServer["tls-authz"] = tlsCredsID, tlsAuthzID
		}
		args := append(slices.Clone(tlsArgs),
			"--blockdev", mustJSON(map[string]any{"driver": "file", "node-name": daemonFileNode, "filename": cfg.Image}),
			"--blockdev", mustJSON(map[string]any{"driver": "qcow2", "node-name": daemonDiskNode, "file": daemonFileNode}),
			"--nbd-server", mustJSON(nbdServer),
			"--export", mustJSON(sd.exportArgs()),
			"--chardev", "socket,id=cairn-qmp,server=on,wait=off,path="+escapeOpt(sd.socket),
			"--monitor", mustJSON(map[string]any{"chardev": "cairn-qmp"}),
			"--pidfile", pidfile,
		)
		proc, err := startHelper("qemu-storage-daemon", args, pidfile)
		if err != nil {
			return err
		}
		var qmp *QMP
		err = proc.waitReady(ctx, func(ctx context.Context) error {
			if qmp == nil {
				// The monitor serves one client at a time: keep the first
				// connection that works.
				dctx, cancel := context.WithTimeout(ctx, 2*time.Second)
				defer cancel()
				q, err := DialQMP(dctx, sd.socket)
				if err != nil {
					return err
				}
				qmp = q
			}
			return probeNBD(ctx, net.JoinHostPort(cfg.Address, strconv.Itoa(port)))
		})
		if err != nil {
			if qmp != nil {
				_ = qmp.Close()
			}
			proc.kill()
			_ = os.Remove(sd.socket)
			return err
		}
		sd.proc, sd.qmp = proc, qmp
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("starting qemu-storage-daemon for %s: %w", cfg.Image, err)
	}
	sd.cfg.Port = port
	return sd, nil
}

func (sd *StorageDaemon) exportArgs() map[string]any {
	return map[string]any{
		"type": "nbd", "id": daemonExportID, "node-name": daemonDiskNode,
		"name": sd.cfg.ExportName, "writable": sd.cfg.Writable,
	}
}

// URI is the NBD URI clients connect to: nbd://ADDRESS:PORT/NAME, or
// nbds://... when the export requires TLS.
func (sd *StorageDaemon) URI() string {
	return nbdURI(sd.cfg.Address, sd.cfg.Port, sd.cfg.ExportName, sd.cfg.TLS != nil)
}

// Port is the TCP port the export listens on.
func (sd *StorageDaemon) Port() int { return sd.cfg.Port }

// Config is the configuration the daemon runs with (absolute paths, the
// bound port).
func (sd *StorageDaemon) Config() DaemonConfig { return sd.cfg }

// Pid is the daemon's process id.
func (sd *StorageDaemon) Pid() int { return sd.proc.pid() }

// Done is closed when the daemon process has exited, for whatever reason.
func (sd *StorageDaemon) Done() <-chan struct{} { return sd.proc.done }

// execute runs a QMP command, dialling the monitor again if the previous
// connection broke. The caller holds sd.mu.
func (sd *StorageDaemon) execute(ctx context.Context, command string, args, result any) error {
	if sd.stopped {
		return fmt.Errorf("qmp %s: storage daemon stopped", command)
	}
	if sd.qmp == nil {
		if sd.proc.exited() {
			return fmt.Errorf("qmp %s: storage daemon exited: %w", command, sd.proc.exitError())
		}
		q, err := DialQMP(ctx, sd.socket)
		if err != nil {
			return err
		}
		sd.qmp = q
	}
	err := sd.qmp.Execute(ctx, command, args, result)
	var qerr *QMPError
	if err != nil && !errors.As(err, &qerr) {
		_ = sd.qmp.Close()
		sd.qmp = nil
	}
	return err
}

// SnapshotCreate takes the internal snapshot tag through QMP
// (blockdev-snapshot-internal-sync). QEMU flushes the image first; when the
// call returns, the snapshot's tables and data are on disk and final, while
// clients keep writing to the active layer.
func (sd *StorageDaemon) SnapshotCreate(ctx context.Context, tag string) error {
	if tag == "" {
		return core.Invalid("empty snapshot tag")
	}
	sd.mu.Lock()
	defer sd.mu.Unlock()
	return sd.execute(ctx, "blockdev-snapshot-internal-sync", map[string]any{"device": daemonDiskNode, "name": tag}, nil)
}

// SnapshotDelete deletes the internal snapshot tag through QMP
// (blockdev-snapshot-delete-internal-sync, by name only). A tag that does not
// exist is reported with core.KindNotFound.
func (sd *StorageDaemon) SnapshotDelete(ctx context.Context, tag string) error {
	if tag == "" {
		return core.Invalid("empty snapshot tag")
	}
	sd.mu.Lock()
	defer sd.mu.Unlock()
	err := sd.execute(ctx, "blockdev-snapshot-delete-internal-sync", map[string]any{"device": daemonDiskNode, "name": tag}, nil)
	var qerr *QMPError
	if errors.As(err, &qerr) && strings.Contains(qerr.Desc, "does not exist") {
		return &core.Error{Kind: core.KindNotFound, Code: "not_found", Err: err}
	}
	return err
}

// virtualSize asks the daemon for the image's current size. Caller holds mu.
func (sd *StorageDaemon) virtualSize(ctx context.Context) (int64, error) {
	var nodes []struct {
		NodeName string `json:"node-name"`
		Image    struct {
			VirtualSize int64 `json:"virtual-size"`
		} `json:"image"`
	}
	if err := sd.execute(ctx, "query-named-block-nodes", map[string]any{"flat": true}, &nodes); err != nil {
		return 0, err
	}
	for _, n := range nodes {
		if n.NodeName == daemonDiskNode {
			return n.Image.VirtualSize, nil
		}
	}
	return 0, fmt.Errorf("storage daemon has no node %s", daemonDiskNode)
}

// Resize grows the image to size bytes (shrinking is refused, core.Invalid;
// the same size is a no-op).
//
// An NBD export does not share the resize permission and NBD cannot tell a
// connected client that the size changed, so Resize removes the export
// (disconnecting its clients), resizes, and adds the export back under the
// same name and port: clients reconnect to the same URI and see the new size.
// The export is added back even when the resize fails.
func (sd *StorageDaemon) Resize(ctx context.Context, size int64) error {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	cur, err := sd.virtualSize(ctx)
	if err != nil {
		return err
	}
	if size < cur {
		return core.Invalid("cannot shrink %s from %d to %d bytes: volumes only grow", sd.cfg.Image, cur, size)
	}
	if size == cur {
		return nil
	}
	if err := sd.execute(ctx, "block-export-del", map[string]any{"id": daemonExportID, "mode": "hard"}, nil); err != nil {
		return err
	}
	// Deletion finishes asynchronously; the id is reusable once it is gone.
	for {
		var exports []struct {
			ID string `json:"id"`
		}
		if err := sd.execute(ctx, "query-block-exports", nil, &exports); err != nil {
			return err
		}
		if len(exports) == 0 {
			break
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for the export to close: %w", ctx.Err())
		case <-time.After(10 * time.Millisecond):
		}
	}
	resizeErr := sd.execute(ctx, "block_resize", map[string]any{"node-name": daemonDiskNode, "size": size}, nil)
	// Re-adding must not be cut short by a ctx that ended during the resize.
	addCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	addErr := sd.execute(addCtx, "block-export-add", sd.exportArgs(), nil)
	return errors.Join(resizeErr, addErr)
}

// Flush writes everything the daemon caches (data and qcow2 metadata of the
// active layer) to the image file. QMP has no flush command; reopening the
// qcow2 node with its unchanged options flushes it first (checked on 7.2).
// Snapshots need no flush: taking one flushes.
func (sd *StorageDaemon) Flush(ctx context.Context) error {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	opts := map[string]any{"driver": "qcow2", "node-name": daemonDiskNode, "file": daemonFileNode}
	return sd.execute(ctx, "blockdev-reopen", map[string]any{"options": []any{opts}}, nil)
}

// Stop asks the daemon to quit (QMP quit: it flushes and closes the image),
// waits for it to exit, and SIGKILLs it after a timeout or when ctx ends. It
// removes the pidfile and the socket. Stop is idempotent. An error means the
// daemon did not exit cleanly (it had to be killed, or had already died);
// either way it is gone when Stop returns.
func (sd *StorageDaemon) Stop(ctx context.Context) error {
	sd.mu.Lock()
	defer sd.mu.Unlock()
	if sd.stopped {
		return nil
	}
	var problem error
	if sd.proc.exited() {
		problem = fmt.Errorf("it had exited: %w", sd.proc.exitError())
	} else {
		qctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		// The answer may be lost when the daemon closes the socket first;
		// how the process exits is what counts.
		_ = sd.execute(qctx, "quit", nil, nil)
		cancel()
		problem = stopHelper(ctx, sd.proc, 10*time.Second)
	}
	sd.stopped = true
	if sd.qmp != nil {
		_ = sd.qmp.Close()
		sd.qmp = nil
	}
	sd.proc.kill() // no-op for an exited process; removes the pidfile
	_ = os.Remove(sd.socket)
	if problem != nil {
		return fmt.Errorf("stopping qemu-storage-daemon for %s: %w", sd.cfg.Image, problem)
	}
	return nil
}

// stopHelper waits for a helper asked to exit, killing it after timeout or
// when ctx ends. It reports a kill or an unclean exit.
func stopHelper(ctx context.Context, proc *helperProcess, timeout time.Duration) error {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-proc.done:
		if proc.waitErr != nil {
			return proc.exitError()
		}
		return nil
	case <-timer.C:
		proc.kill()
		return fmt.Errorf("it did not exit within %v: killed", timeout)
	case <-ctx.Done():
		proc.kill()
		return fmt.Errorf("killed: %w", ctx.Err())
	}
}

// nbdURI formats an NBD URI; nbds is the scheme of the NBD URI specification
// for a server that requires TLS.
func nbdURI(address string, port int, name string, tls bool) string {
	scheme := "nbd://"
	if tls {
		scheme = "nbds://"
	}
	return scheme + net.JoinHostPort(address, strconv.Itoa(port)) + "/" + name
}

// probeNBD checks that an NBD server on addr is serving: it must send the
// newstyle greeting, which QEMU's servers do only once their export is open
// (qemu-nbd listens BEFORE it opens the image, so a bare TCP connect would
// report a server that is about to fail). The probe then ends the session
// politely (NBD_OPT_ABORT) so that the server logs nothing. The greeting and
// the abort precede TLS, so the probe works on a server that requires TLS
// too (QEMU answers the abort with "TLS required" and closes, quietly).
func probeNBD(ctx context.Context, addr string) error {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	var greeting [18]byte // "NBDMAGIC", "IHAVEOPT", 16-bit handshake flags
	if _, err := io.ReadFull(conn, greeting[:]); err != nil {
		return fmt.Errorf("no NBD greeting: %w", err)
	}
	if string(greeting[0:8]) != "NBDMAGIC" || string(greeting[8:16]) != "IHAVEOPT" {
		return fmt.Errorf("not an NBD newstyle server: %q", greeting[:16])
	}
	var msg [20]byte
	binary.BigEndian.PutUint32(msg[0:4], 1) // client flags: fixed newstyle
	copy(msg[4:12], "IHAVEOPT")
	binary.BigEndian.PutUint32(msg[12:16], 2) // NBD_OPT_ABORT, no data
	if _, err := conn.Write(msg[:]); err != nil {
		return fmt.Errorf("ending the NBD probe: %w", err)
	}
	var reply [20]byte // best effort: the server may just close
	_, _ = io.ReadFull(conn, reply[:])
	return nil
}

// freePort returns a port that was free on address a moment ago.
func freePort(address string) (int, error) {
	l, err := net.Listen("tcp", net.JoinHostPort(address, "0"))
	if err != nil {
		return 0, fmt.Errorf("finding a free port on %s: %w", address, err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	return port, l.Close()
}
