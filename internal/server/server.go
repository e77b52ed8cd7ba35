// Package server runs `cairn server`: it opens the metadata in the data
// directory, bootstraps projects and the admin token, fails tasks a previous run
// left running, serves the REST API and metrics, and (in the embedded default)
// runs a node worker for the local host that talks to the API like any other node.
// Its certificate authority, which signs the certificates of TLS exports, lives
// in DATA/pki and is created at the first start.
package server

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/atomicfile"
	"github.com/cairn-backup/cairn/internal/blob/local"
	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/httpapi"
	"github.com/cairn-backup/cairn/internal/meta"
	"github.com/cairn-backup/cairn/internal/meta/sqlite"
	"github.com/cairn-backup/cairn/internal/node"
	"github.com/cairn-backup/cairn/internal/pki"
	"github.com/cairn-backup/cairn/internal/repo"
	"github.com/cairn-backup/cairn/internal/service"
)

// Options configure a server.
type Options struct {
	DataDir       string // default ./cairn-data
	Listen        string // default 127.0.0.1:7420
	TLSCert       string // PEM certificate; required with TLSKey for a non-loopback Listen
	TLSKey        string
	ExportAddress string // where NBD exports listen; default 127.0.0.1
	// ExportTLS makes exports require TLS even on loopback (beyond loopback
	// they always do).
	ExportTLS    bool
	MaxSnapshots int // per volume; default 1000
	// ScheduleGrace is how late a missed schedule slot may still run once
	// at start (default 6 h).
	ScheduleGrace time.Duration
	// NoNode disables the in-process node (for a server whose host holds no volumes).
	NoNode bool
	// NodeName names the in-process node (default "local").
	NodeName string
	// RebuildMetadata recreates volume and snapshot rows from the sidecar files
	// in DataDir/volumes before starting.
	RebuildMetadata bool
	Logger          *slog.Logger
	// Out receives the lines meant for the operator (address, first token).
	Out func(format string, args ...any)
}

// Server is a running server.
type Server struct {
	URL        string // base URL of the API
	AdminToken string // the admin token if this start created it, else ""
	db         *meta.DB
	http       *http.Server
	wg         sync.WaitGroup
	errc       chan error
	cancel     context.CancelFunc
}

func (o *Options) defaults() {
	if o.DataDir == "" {
		o.DataDir = "cairn-data"
	}
	if o.Listen == "" {
		o.Listen = "127.0.0.1:7420"
	}
	if o.NodeName == "" {
		o.NodeName = "local"
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	if o.Out == nil {
		o.Out = func(string, ...any) {}
	}
}

func isLoopback(hostport string) bool {
	host, _, err := net.SplitHostPort(hostport)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Start opens everything and begins serving; Wait or Stop end it.
func Start(ctx context.Context, o Options) (*Server, error) {
	o.defaults()
	useTLS := o.TLSCert != "" || o.TLSKey != ""
	if useTLS && (o.TLSCert == "" || o.TLSKey == "") {
		return nil, errors.New("give both --tls-cert and --tls-key")
	}
	if !isLoopback(o.Listen) && !useTLS {
		return nil, fmt.Errorf("listening on %s beyond loopback needs TLS: pass --tls-cert and --tls-key", o.Listen)
	}
	abs, err := filepath.Abs(o.DataDir)
	if err != nil {
		return nil, err
	}
	o.DataDir = abs
	for _, d := range []string{o.DataDir, filepath.Join(o.DataDir, "volumes"), filepath.Join(o.DataDir, "run")} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("data directory: %w", err)
		}
	}
	ca, err := pki.LoadOrCreateCA(filepath.Join(o.DataDir, "pki"))
	if err != nil {
		return nil, err
	}
	secretKey, err := loadOrCreateSecretKey(filepath.Join(o.DataDir, "secret.key"))
	if err != nil {
		return nil, err
	}
	db, err := sqlite.Open(ctx, filepath.Join(o.DataDir, "cairn.db"))
	if err != nil {
		return nil, err
	}
	svc := service.New(db, service.Config{MaxSnapshotsPerVolume: o.MaxSnapshots, ExportAddress: o.ExportAddress,
		ScheduleGrace: o.ScheduleGrace, Logger: o.Logger.With("component", "scheduler"),
		ExportTLS: o.ExportTLS, CA: ca, SecretKey: secretKey})
	s := &Server{db: db, errc: make(chan error, 4)}
	fail := func(err error) (*Server, error) {
		db.Close()
		return nil, err
	}
	secret, err := svc.Bootstrap(ctx)
	if err != nil {
		return fail(err)
	}
	tokenFile := filepath.Join(o.DataDir, "admin.token")
	if secret != "" {
		if err := os.WriteFile(tokenFile, []byte(secret+"\n"), 0o600); err != nil {
			return fail(fmt.Errorf("write %s: %w", tokenFile, err))
		}
		s.AdminToken = secret
	}
	var nodeID, nodeSecret string
	if !o.NoNode {
		if nodeID, nodeSecret, err = svc.EnsureLocalNode(ctx, o.NodeName); err != nil {
			return fail(err)
		}
	}
	if nodeID != "" {
		// The embedded default backs up into DATA/repository until the
		// operator adds another repository (made once, at the first start).
		dir := filepath.Join(o.DataDir, "repository")
		err := svc.EnsureDefaultRepository(ctx, nodeID, dir, func(ctx context.Context, password string) error {
			return createLocalRepository(ctx, dir, password)
		})
		switch k := core.KindOf(err); {
		case err == nil:
		case k == core.KindUnauthorized || k == core.KindConflict:
			// The metadata was lost or replaced, and the repository it
			// made is still there: keep it, and say how to get it back.
			o.Logger.Warn("the data directory holds a repository the metadata does not know: adopt it with `cairn repository create default --url "+
				dir+" --password-file FILE` (its password), or move it away", "err", err)
		default:
			return fail(fmt.Errorf("default repository: %w", err))
		}
	}
	if o.RebuildMetadata {
		if o.NoNode {
			return fail(errors.New("--rebuild-metadata needs the in-process node (the volumes in this data directory belong to it)"))
		}
		n, err := rebuild(ctx, svc, nodeID, filepath.Join(o.DataDir, "volumes"))
		if err != nil {
			return fail(fmt.Errorf("rebuild metadata: %w", err))
		}
		o.Out("rebuilt metadata: %d volumes added from sidecar files\n", n)
	}
	if nodeID != "" {
		// The in-process node died with the previous run: its running tasks are gone.
		if n, err := svc.FailInterrupted(ctx, nodeID, "server restarted while the task ran; check the volume and retry"); err != nil {
			return fail(err)
		} else if n > 0 {
			o.Logger.Warn("tasks left running by the previous run were marked failed", "count", n)
		}
	}

	metrics := httpapi.NewMetrics(svc)
	handler := httpapi.New(svc, o.Logger, metrics.Handler())
	ln, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fail(fmt.Errorf("listen on %s: %w", o.Listen, err))
	}
	scheme := "http"
	var nodeHTTP *http.Client
	if useTLS {
		cert, err := tls.LoadX509KeyPair(o.TLSCert, o.TLSKey)
		if err != nil {
			ln.Close()
			return fail(fmt.Errorf("TLS certificate: %w", err))
		}
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		scheme = "https"
		pool := x509.NewCertPool()
		if pem, err := os.ReadFile(o.TLSCert); err == nil {
			pool.AppendCertsFromPEM(pem)
		}
		nodeHTTP = &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"}}}
	}
	s.URL = scheme + "://" + ln.Addr().String()
	s.http = &http.Server{Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	runCtx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		if err := s.http.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.errc <- fmt.Errorf("http server: %w", err)
		}
	}()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(15 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-runCtx.Done():
				return
			case <-t.C:
				if _, err := svc.FailLostNodes(runCtx); err != nil && runCtx.Err() == nil {
					o.Logger.Error("checking node heartbeats", "err", err)
				}
			}
		}
	}()
	// The scheduler: it works only while this process holds the lease row,
	// so several servers on one store run each slot once.
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		svc.RunScheduler(runCtx, schedulerHolder(), time.Second)
	}()
	if !o.NoNode {
		opts := []client.Option{}
		if nodeHTTP != nil {
			opts = append(opts, client.WithHTTPClient(nodeHTTP))
		}
		api := client.New(localURL(s.URL), nodeSecret, opts...)
		w := &node.Worker{Server: api, DataDir: o.DataDir, Logger: o.Logger.With("node", o.NodeName), ExportAddress: o.ExportAddress}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			if err := w.Run(runCtx); err != nil && runCtx.Err() == nil {
				s.errc <- fmt.Errorf("node worker: %w", err)
			}
		}()
	}
	o.Out("cairn server listening on %s\n", s.URL)
	if secret != "" {
		o.Out("admin token (shown once, also in %s): %s\n", tokenFile, secret)
	} else {
		o.Out("admin token: see %s\n", tokenFile)
	}
	return s, nil
}

// schedulerHolder names this process in the scheduler's lease row.
func schedulerHolder() string {
	host, _ := os.Hostname()
	return fmt.Sprintf("%s/%d/%s", host, os.Getpid(), core.RandomToken(4))
}

// localURL points the in-process node at loopback even when the server listens
// on a wildcard address.
func localURL(u string) string {
	for _, wild := range []string{"0.0.0.0", "[::]"} {
		u = strings.Replace(u, "://"+wild+":", "://127.0.0.1:", 1)
	}
	return u
}

// Wait blocks until ctx ends or a component fails, then stops the server.
func (s *Server) Wait(ctx context.Context) error {
	var err error
	select {
	case <-ctx.Done():
	case err = <-s.errc:
	}
	if serr := s.Stop(); err == nil {
		err = serr
	}
	return err
}

// Stop shuts the API down, stops the node worker and its helper processes,
// and closes the metadata.
func (s *Server) Stop() error {
	s.cancel()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	err := s.http.Shutdown(ctx)
	s.wg.Wait()
	if cerr := s.db.Close(); err == nil {
		err = cerr
	}
	return err
}

// rebuild reads every sidecar in dir and recreates the rows the metadata lacks.
func rebuild(ctx context.Context, svc *service.Service, nodeID, dir string) (int, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return 0, err
	}
	var scs []apitypes.Sidecar
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return 0, err
		}
		var sc apitypes.Sidecar
		if err := json.Unmarshal(b, &sc); err != nil {
			return 0, fmt.Errorf("sidecar %s: %w", f, err)
		}
		if sc.ID == "" || filepath.Base(f) != sc.ID+".json" {
			return 0, fmt.Errorf("sidecar %s: its id %q does not match the file name", f, sc.ID)
		}
		if _, err := os.Stat(filepath.Join(dir, sc.ID+".qcow2")); err != nil {
			continue // the volume's file is gone; nothing to rebuild
		}
		scs = append(scs, sc)
	}
	return svc.Rebuild(ctx, nodeID, scs)
}

// loadOrCreateSecretKey reads the server's secret key (32 bytes, which seal
// the repositories' passwords and S3 credentials in the metadata), making it
// at the first start. Losing it makes those secrets unreadable: it belongs in
// the data directory's backups.
func loadOrCreateSecretKey(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err == nil {
		if len(b) != 32 {
			return nil, fmt.Errorf("%s: %d bytes, want 32 (a damaged secret key: restore it from a backup of the data directory)", path, len(b))
		}
		return b, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("reading the secret key: %w", err)
	}
	b = make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	if err := atomicfile.Write(path, b, 0o600); err != nil {
		return nil, fmt.Errorf("writing the secret key: %w", err)
	}
	return b, nil
}

// createLocalRepository initialises a repository in dir (a retried first
// start finds the one it made and opens it with the same password).
func createLocalRepository(ctx context.Context, dir, password string) error {
	store, err := local.Open(dir, true)
	if err != nil {
		return err
	}
	defer store.Close()
	_, err = repo.Init(ctx, store, []byte(password), repo.InitOptions{}, repo.Options{})
	if core.CodeOf(err) == "exists" {
		_, err = repo.Open(ctx, store, []byte(password), repo.Options{})
	}
	return err
}
