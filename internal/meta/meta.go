// Package meta is cairn's metadata store: projects, tokens, nodes, volumes,
// snapshots, exports and tasks, in SQL that runs unchanged on SQLite (the
// embedded default, see meta/sqlite) and PostgreSQL.
//
// All writes happen inside DB.Update: the closure's changes commit together when
// it returns nil and roll back when it returns an error, so no caller ever sees
// half of a change. Reads run inside DB.View. A DB is safe for concurrent use;
// transactions must not be nested (a closure must not call Update or View).
package meta

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
)

//go:embed migrations/*.sql
var migrations embed.FS

// Dialect names the SQL engine behind a DB.
type Dialect string

const (
	SQLite   Dialect = "sqlite"
	Postgres Dialect = "postgres"
)

// DB is an open metadata store.
type DB struct {
	sql     *sql.DB // read-write transactions
	ro      *sql.DB // read-only transactions (the same pool on PostgreSQL)
	dialect Dialect
}

// Open wraps open handles and brings the schema to the newest version. ro
// serves View; it may be the same handle as db. SQLite uses two: a single
// writer connection whose transactions take the write lock at BEGIN, and a
// pool of readers that never wait for it (WAL).
func Open(ctx context.Context, db, ro *sql.DB, dialect Dialect) (*DB, error) {
	prov, err := goose.NewProvider(goose.Dialect(dialectName(dialect)), db, migrationsFS())
	if err != nil {
		return nil, fmt.Errorf("metadata migrations: %w", err)
	}
	if _, err := prov.Up(ctx); err != nil {
		return nil, fmt.Errorf("metadata migrations: %w", err)
	}
	if ro == nil {
		ro = db
	}
	return &DB{sql: db, ro: ro, dialect: dialect}, nil
}

func dialectName(d Dialect) string {
	if d == Postgres {
		return "postgres"
	}
	return "sqlite3"
}

func migrationsFS() fs.FS {
	sub, err := fs.Sub(migrations, "migrations")
	if err != nil {
		panic(err) // the embedded tree is fixed at build time
	}
	return sub
}

// Close closes the underlying database.
func (db *DB) Close() error {
	err := db.sql.Close()
	if db.ro != db.sql {
		if rerr := db.ro.Close(); err == nil {
			err = rerr
		}
	}
	return err
}

// SQL returns the underlying database (for tests and health checks).
func (db *DB) SQL() *sql.DB { return db.sql }

// Tx is a metadata transaction; its methods are the store's queries.
type Tx struct {
	tx      *sql.Tx
	dialect Dialect
}

// Update runs fn in a read-write transaction, committing if fn returns nil.
func (db *DB) Update(ctx context.Context, fn func(*Tx) error) error {
	return db.run(ctx, false, fn)
}

// View runs fn in a read-only transaction.
func (db *DB) View(ctx context.Context, fn func(*Tx) error) error {
	return db.run(ctx, true, fn)
}

func (db *DB) run(ctx context.Context, readOnly bool, fn func(*Tx) error) error {
	var opts *sql.TxOptions
	if readOnly && db.dialect == Postgres {
		opts = &sql.TxOptions{ReadOnly: true}
	}
	pool := db.sql
	if readOnly {
		pool = db.ro
	}
	var lastErr error
	for attempt := 0; attempt < 5; attempt++ {
		tx, err := pool.BeginTx(ctx, opts)
		if err != nil {
			return fmt.Errorf("metadata: begin: %w", err)
		}
		err = fn(&Tx{tx: tx, dialect: db.dialect})
		if err != nil {
			_ = tx.Rollback()
			if isRetryable(err) && ctx.Err() == nil {
				lastErr = err
				time.Sleep(time.Duration(attempt+1) * 20 * time.Millisecond)
				continue
			}
			return err
		}
		if err := tx.Commit(); err != nil {
			if isRetryable(err) && ctx.Err() == nil {
				lastErr = err
				continue
			}
			return fmt.Errorf("metadata: commit: %w", err)
		}
		return nil
	}
	return fmt.Errorf("metadata: gave up after repeated conflicts: %w", lastErr)
}

// isRetryable reports a transient lock or serialization failure.
func isRetryable(err error) bool {
	s := err.Error()
	return strings.Contains(s, "SQLITE_BUSY") || strings.Contains(s, "database is locked") ||
		strings.Contains(s, "40001") || strings.Contains(s, "could not serialize")
}

// IsUniqueViolation reports whether err is a unique-constraint failure.
func IsUniqueViolation(err error) bool {
	if err == nil {
		return false
	}
	s := err.Error()
	return strings.Contains(s, "UNIQUE constraint failed") || strings.Contains(s, "23505") ||
		strings.Contains(s, "duplicate key")
}

// rebind turns '?' placeholders into $1, $2 ... for PostgreSQL.
func (t *Tx) rebind(q string) string {
	if t.dialect != Postgres {
		return q
	}
	var b strings.Builder
	n := 0
	for i := 0; i < len(q); i++ {
		if q[i] == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteByte(q[i])
	}
	return b.String()
}

func (t *Tx) exec(ctx context.Context, q string, args ...any) (sql.Result, error) {
	return t.tx.ExecContext(ctx, t.rebind(q), args...)
}

func (t *Tx) query(ctx context.Context, q string, args ...any) (*sql.Rows, error) {
	return t.tx.QueryContext(ctx, t.rebind(q), args...)
}

func (t *Tx) queryRow(ctx context.Context, q string, args ...any) *sql.Row {
	return t.tx.QueryRowContext(ctx, t.rebind(q), args...)
}

// ErrNoRows is returned by single-row getters when nothing matches.
var ErrNoRows = sql.ErrNoRows

// IsNoRows reports whether err means "no such row".
func IsNoRows(err error) bool { return errors.Is(err, sql.ErrNoRows) }

// Times are stored as fixed-width UTC text so that they sort as strings.
const timeLayout = "2006-01-02T15:04:05.000000000Z"

// FormatTime renders t for storage.
func FormatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

func parseTime(s string) time.Time {
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		t, _ = time.Parse(time.RFC3339Nano, s)
	}
	return t
}

func parseTimePtr(s sql.NullString) *time.Time {
	if !s.Valid || s.String == "" {
		return nil
	}
	t := parseTime(s.String)
	return &t
}

func nullString(p *string) sql.NullString {
	if p == nil {
		return sql.NullString{}
	}
	return sql.NullString{String: *p, Valid: true}
}

func stringPtr(s sql.NullString) *string {
	if !s.Valid {
		return nil
	}
	v := s.String
	return &v
}

func timePtrString(t *time.Time) sql.NullString {
	if t == nil {
		return sql.NullString{}
	}
	return sql.NullString{String: FormatTime(*t), Valid: true}
}
