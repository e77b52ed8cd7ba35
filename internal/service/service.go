// Package service holds cairn's use cases: who may do what, the snapshot tree
// rules, the task queue and what a node must do for each task. It turns API
// requests into metadata changes and tasks, and node reports into committed
// state. It never imports net/http; httpapi calls it, nodes reach it through
// httpapi's node endpoints.
//
// Every method that changes metadata does so in one meta.DB.Update closure, so
// a request either takes full effect or none. Disk work happens on nodes:
// a request records a queued task (202); a node claims it and receives a Plan
// computed from the metadata at claim time; when the node completes it, the
// change is committed. Tasks on one volume run one at a time, in order.
package service

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
	"github.com/cairn-backup/cairn/internal/schedule"
)

// Config holds the service's limits and settings.
type Config struct {
	// Logger receives the scheduler's warnings (default slog.Default()).
	Logger *slog.Logger
	// ScheduleGrace is how late a missed slot may still run once, when the
	// server starts again (default 6 h).
	ScheduleGrace time.Duration
	// MaxSnapshotsPerVolume limits user snapshots per volume (default 1000).
	MaxSnapshotsPerVolume int
	// ExportAddress is the address NBD exports listen on (default 127.0.0.1).
	ExportAddress string
	// ExportTLS makes every new export require TLS, even on loopback; beyond
	// loopback exports require it anyway.
	ExportTLS bool
	// CA issues the certificates of TLS exports; without one, creating a
	// TLS export fails.
	CA CertificateAuthority
	// SecretKey (32 bytes) seals the repositories' passwords and S3
	// credentials in the metadata; without it repositories cannot be made.
	SecretKey []byte
	// NodeTimeout is how long a node may go without a heartbeat before it is
	// shown offline and its running tasks fail (default 60 s).
	NodeTimeout time.Duration
}

// Service is safe for concurrent use.
type Service struct {
	db  *meta.DB
	cfg Config
	now func() time.Time

	changed   broadcaster   // wakes claimers and task waiters
	schedWake chan struct{} // wakes the scheduler

	// OnTaskFinished, if set, is called after a task reaches a final state.
	OnTaskFinished func(kind, state string, d time.Duration)
}

// New returns a Service over db.
func New(db *meta.DB, cfg Config) *Service {
	if cfg.MaxSnapshotsPerVolume <= 0 {
		cfg.MaxSnapshotsPerVolume = 1000
	}
	if cfg.ExportAddress == "" {
		cfg.ExportAddress = "127.0.0.1"
	}
	if cfg.NodeTimeout <= 0 {
		cfg.NodeTimeout = 60 * time.Second
	}
	if cfg.ScheduleGrace <= 0 {
		cfg.ScheduleGrace = schedule.DefaultGrace
	}
	return &Service{db: db, cfg: cfg, now: func() time.Time { return time.Now().UTC() }, schedWake: make(chan struct{}, 1)}
}

func (s *Service) log() *slog.Logger {
	if s.cfg.Logger != nil {
		return s.cfg.Logger
	}
	return slog.Default()
}

// DB returns the metadata store.
func (s *Service) DB() *meta.DB { return s.db }

// broadcaster lets goroutines wait for "something changed".
type broadcaster struct {
	mu sync.Mutex
	ch chan struct{}
}

func (b *broadcaster) wait() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch == nil {
		b.ch = make(chan struct{})
	}
	return b.ch
}

func (b *broadcaster) notify() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.ch != nil {
		close(b.ch)
		b.ch = nil
	}
}

// Caller is an authenticated request's identity.
type Caller struct {
	TokenID     string
	Role        string // admin, operator, viewer; "node" for a node token
	ProjectID   string // the project the request acts in
	ProjectName string
	NodeID      string // set for node tokens
}

// IsAdmin reports whether the caller holds the admin role.
func (c Caller) IsAdmin() bool { return c.Role == apitypes.RoleAdmin }

// CanWrite reports whether the caller may change things in its project.
func (c Caller) CanWrite() bool {
	return c.Role == apitypes.RoleAdmin || c.Role == apitypes.RoleOperator
}

func (c Caller) requireWrite() error {
	if !c.CanWrite() {
		return core.Forbidden("the %s role may only read; ask an operator or admin", c.Role)
	}
	return nil
}

func (c Caller) requireAdmin() error {
	if !c.IsAdmin() {
		return core.Forbidden("only an admin token may do this")
	}
	return nil
}

func (c Caller) requireUser() error {
	if c.NodeID != "" {
		return core.Forbidden("a node token reaches only the node API")
	}
	return nil
}

// HashToken returns the stored form of a secret token.
func HashToken(secret string) string {
	h := sha256.Sum256([]byte(secret))
	return hex.EncodeToString(h[:])
}

// NewTokenSecret returns a fresh secret with a readable prefix.
func NewTokenSecret(prefix string) string { return prefix + core.RandomToken(24) }

// Authenticate resolves a bearer token and an optional project override.
func (s *Service) Authenticate(ctx context.Context, secret, project string) (Caller, error) {
	if secret == "" {
		return Caller{}, core.Unauthorized("no token: pass --token, set CAIRN_TOKEN or run `cairn login`")
	}
	hash := HashToken(secret)
	var c Caller
	touch := false
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		tok, err := tx.TokenByHash(ctx, hash)
		if meta.IsNoRows(err) {
			n, nerr := tx.NodeByTokenHash(ctx, hash)
			if nerr != nil {
				return core.Unauthorized("unknown token")
			}
			c = Caller{Role: "node", NodeID: n.ID}
			return nil
		}
		if err != nil {
			return err
		}
		home, err := tx.ProjectByID(ctx, tok.ProjectID)
		if err != nil {
			return err
		}
		c = Caller{TokenID: tok.ID, Role: tok.Role, ProjectID: home.ID, ProjectName: home.Name}
		touch = tok.LastUsed == nil || s.now().Sub(*tok.LastUsed) > time.Minute
		if c.Role == apitypes.RoleAdmin && project == "" && home.Name == apitypes.SystemProject {
			project = apitypes.DefaultProject
		}
		if project != "" && project != home.Name && project != home.ID {
			if c.Role != apitypes.RoleAdmin {
				return core.Forbidden("only an admin token may act in another project")
			}
			p, err := projectByRef(ctx, tx, project)
			if err != nil {
				return err
			}
			c.ProjectID, c.ProjectName = p.ID, p.Name
		}
		return nil
	})
	if err != nil {
		return Caller{}, err
	}
	if touch {
		_ = s.db.Update(ctx, func(tx *meta.Tx) error { return tx.TouchToken(ctx, c.TokenID, s.now()) })
	}
	return c, nil
}

func projectByRef(ctx context.Context, tx *meta.Tx, ref string) (meta.Project, error) {
	var p meta.Project
	var err error
	if core.IsUUID(ref) {
		p, err = tx.ProjectByID(ctx, ref)
	} else {
		p, err = tx.ProjectByName(ctx, ref)
	}
	if meta.IsNoRows(err) {
		return p, core.NotFound("project %q not found", ref)
	}
	return p, err
}

// ---- pagination ----

// Page is a decoded list request.
type Page struct {
	Limit  int
	Cursor string
}

const (
	defaultLimit = 100
	maxLimit     = 1000
)

// ParsePage validates limit and cursor query values.
func ParsePage(limit, cursor string) (Page, error) {
	p := Page{Limit: defaultLimit}
	if limit != "" {
		n, err := strconv.Atoi(limit)
		if err != nil || n < 1 || n > maxLimit {
			return p, core.Invalid("invalid limit %q: give a number from 1 to %d", limit, maxLimit)
		}
		p.Limit = n
	}
	if cursor != "" {
		b, err := base64.RawURLEncoding.DecodeString(cursor)
		if err != nil {
			return p, core.Invalid("invalid cursor: pass next_cursor from the previous page unchanged")
		}
		p.Cursor = string(b)
	}
	return p, nil
}

func encodeCursor(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// pageOf trims items fetched with limit+1 and computes the next cursor.
func pageOf[T, R any](items []T, limit int, conv func(T) R, key func(T) string) apitypes.List[R] {
	out := apitypes.List[R]{Items: []R{}}
	more := len(items) > limit
	if more {
		items = items[:limit]
	}
	for _, it := range items {
		out.Items = append(out.Items, conv(it))
	}
	if more && len(items) > 0 {
		out.NextCursor = encodeCursor(key(items[len(items)-1]))
	}
	return out
}

func cursorInt(c string) (int64, error) {
	if c == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(c, 10, 64)
	if err != nil {
		return 0, core.Invalid("invalid cursor: pass next_cursor from the previous page unchanged")
	}
	return n, nil
}

// ---- bootstrap ----

// Bootstrap creates the system and default projects and, when no admin token
// exists yet, an admin token whose secret it returns (once); otherwise "".
func (s *Service) Bootstrap(ctx context.Context) (adminSecret string, err error) {
	err = s.db.Update(ctx, func(tx *meta.Tx) error {
		sys, err := s.ensureProject(ctx, tx, apitypes.SystemProject)
		if err != nil {
			return err
		}
		if _, err := s.ensureProject(ctx, tx, apitypes.DefaultProject); err != nil {
			return err
		}
		toks, err := tx.Tokens(ctx, sys.ID, "", 1)
		if err != nil {
			return err
		}
		if len(toks) > 0 {
			return nil
		}
		adminSecret = NewTokenSecret("cairn_")
		return tx.InsertToken(ctx, meta.Token{ID: core.NewID(), Name: "admin", ProjectID: sys.ID, Role: apitypes.RoleAdmin,
			Hash: HashToken(adminSecret), CreatedAt: s.now()})
	})
	return adminSecret, err
}

func (s *Service) ensureProject(ctx context.Context, tx *meta.Tx, name string) (meta.Project, error) {
	p, err := tx.ProjectByName(ctx, name)
	if err == nil {
		return p, nil
	}
	if !meta.IsNoRows(err) {
		return p, err
	}
	p = meta.Project{ID: core.NewID(), Name: name, CreatedAt: s.now()}
	return p, tx.InsertProject(ctx, p)
}

// EnsureLocalNode creates (or re-keys) the node of the embedded default and
// returns its id and a fresh token secret.
func (s *Service) EnsureLocalNode(ctx context.Context, name string) (id, secret string, err error) {
	secret = NewTokenSecret("cairnnode_")
	err = s.db.Update(ctx, func(tx *meta.Tx) error {
		n, err := tx.NodeByName(ctx, name)
		if meta.IsNoRows(err) {
			id = core.NewID()
			return tx.InsertNode(ctx, meta.Node{ID: id, Name: name, TokenHash: HashToken(secret), CreatedAt: s.now()})
		}
		if err != nil {
			return err
		}
		id = n.ID
		return tx.SetNodeTokenHash(ctx, n.ID, HashToken(secret))
	})
	return id, secret, err
}

// TimeString formats a time for sidecars.
func TimeString(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func errorf(format string, args ...any) error { return fmt.Errorf(format, args...) }

func trimLower(s string) string { return strings.ToLower(strings.TrimSpace(s)) }
