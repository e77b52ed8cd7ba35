package node

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/nbd"
	"github.com/cairn-backup/cairn/internal/repo"
	"github.com/cairn-backup/cairn/internal/repo/nbdexport"
)

// backupServer serves one backup over NBD from the node's own process,
// reading the repository only for what clients ask. It holds a shared
// repository lock while it runs.
type backupServer struct {
	spec   apitypes.NodeExport // Port as bound
	cancel context.CancelFunc
	done   chan struct{}
}

// backupExport starts serving the plan's backup (a retried task finds it
// running and answers its port).
func (t *task) backupExport(ctx context.Context) error {
	port, err := t.w.startBackupExport(ctx, t.plan)
	t.res.Port = port
	return err
}

// backupUnexport stops serving a backup; one that does not run is fine.
func (t *task) backupUnexport(ctx context.Context) error {
	if t.plan.Export == nil {
		return core.Invalid("no export in the plan")
	}
	return t.w.stopBackupExport(ctx, t.plan.Export.ID)
}

// startBackupExport opens the repository, takes a shared lock, loads the
// backup and listens on the plan's address and port (0: any free one).
func (w *Worker) startBackupExport(ctx context.Context, p apitypes.Plan) (int, error) {
	spec := p.Export
	if spec == nil || p.Backup == nil || p.Repository == nil {
		return 0, core.Invalid("no export, backup or repository in the plan")
	}
	w.mu.Lock()
	cur := w.backups[spec.ID]
	w.mu.Unlock()
	if cur != nil {
		return cur.spec.Port, nil
	}
	tlsConf, err := exportTLSConfig(spec)
	if err != nil {
		return 0, err
	}
	rt := &task{w: w, plan: p}
	r, done, err := rt.lockedRepository(ctx, false, "export", true)
	if err != nil {
		return 0, err
	}
	m, err := r.LoadManifest(ctx, p.Backup.ID)
	if err == nil && m.Image == nil {
		err = core.Invalid("backup %s is a file backup, not a disk image", m.ID)
	}
	// The reader lives as long as the export, not the task.
	sctx, cancel := context.WithCancel(context.Background())
	var ir *repo.ImageReader
	if err == nil {
		ir, err = r.NewImageReader(sctx, m)
	}
	if err != nil {
		cancel()
		done()
		return 0, err
	}
	address := spec.Address
	if address == "" {
		address = w.ExportAddress
	}
	l, err := net.Listen("tcp", net.JoinHostPort(address, strconv.Itoa(spec.Port)))
	if err != nil {
		cancel()
		done()
		return 0, fmt.Errorf("serving backup %s: %w", m.ID, err)
	}
	bs := &backupServer{spec: *spec, done: make(chan struct{})}
	bs.spec.Port = l.Addr().(*net.TCPAddr).Port
	exp := nbdexport.New(ir, fmt.Sprintf("cairn backup %s", m.ID))
	srv := &nbd.Server{ReadOnly: true, TLSConfig: tlsConf, MaxConns: 64,
		Lookup: func(name string) (nbd.Export, bool) {
			if name == spec.Name {
				return exp, true
			}
			return nil, false
		},
		Logf: func(format string, args ...any) {
			w.log().Warn("backup export", "export", spec.ID, "event", fmt.Sprintf(format, args...))
		},
	}
	bs.cancel = cancel
	w.mu.Lock()
	w.backups[spec.ID] = bs
	w.mu.Unlock()
	go func() {
		defer close(bs.done)
		defer done()
		defer ir.Close()
		if err := srv.Serve(sctx, l); err != nil {
			w.log().Error("backup export stopped", "export", spec.ID, "err", err)
		}
	}()
	w.log().Info("backup export started", "backup", m.ID, "export", spec.ID, "port", bs.spec.Port, "tls", tlsConf != nil)
	return bs.spec.Port, nil
}

// stopBackupExport stops serving and releases the repository.
func (w *Worker) stopBackupExport(ctx context.Context, id string) error {
	w.mu.Lock()
	bs := w.backups[id]
	delete(w.backups, id)
	w.mu.Unlock()
	if bs == nil {
		return nil
	}
	bs.cancel()
	select {
	case <-bs.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// stopBackupExports stops every backup export, when Run ends.
func (w *Worker) stopBackupExports(ctx context.Context) {
	w.mu.Lock()
	var ids []string
	for id := range w.backups {
		ids = append(ids, id)
	}
	w.mu.Unlock()
	var wg sync.WaitGroup
	for _, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_ = w.stopBackupExport(ctx, id)
		}()
	}
	wg.Wait()
}

// exportTLSConfig is the TLS configuration of an export served in-process:
// the server certificate of the plan, and only client certificates the CA
// signed for the one identity admitted. nil for an export without TLS.
func exportTLSConfig(spec *apitypes.NodeExport) (*tls.Config, error) {
	if spec.TLS == nil {
		return nil, nil
	}
	t := spec.TLS
	if t.CACert == "" || t.ServerCert == "" || t.ServerKey == "" || t.ClientIdentity == "" {
		return nil, core.Invalid("export %s requires TLS but its plan lacks the CA, the server certificate, its key or the client identity", spec.ID)
	}
	cert, err := tls.X509KeyPair([]byte(t.ServerCert), []byte(t.ServerKey))
	if err != nil {
		return nil, fmt.Errorf("export %s: server certificate: %w", spec.ID, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(t.CACert)) {
		return nil, fmt.Errorf("export %s: the CA certificate does not parse", spec.ID)
	}
	identity := t.ClientIdentity
	return &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		VerifyPeerCertificate: func(_ [][]byte, chains [][]*x509.Certificate) error {
			if len(chains) == 0 || len(chains[0]) == 0 {
				return errors.New("no verified client certificate")
			}
			if got := chains[0][0].Subject.String(); got != identity {
				return fmt.Errorf("client %q is not admitted to this export", got)
			}
			return nil
		},
	}, nil
}
