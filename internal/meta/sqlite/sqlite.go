// Package sqlite opens cairn's embedded metadata store: a SQLite database in
// the data directory through the pure-Go modernc.org/sqlite driver, in WAL mode
// with immediate write transactions and a busy timeout, so the cairn binary
// needs no cgo.
package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"net/url"

	"github.com/cairn-backup/cairn/internal/meta"
	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

// Open opens (creating if needed) the database at path and migrates it.
func Open(ctx context.Context, path string) (*meta.DB, error) {
	w, err := open(ctx, path, "immediate", 1)
	if err != nil {
		return nil, err
	}
	r, err := open(ctx, path, "deferred", 8)
	if err != nil {
		w.Close()
		return nil, err
	}
	m, err := meta.Open(ctx, w, r, meta.SQLite)
	if err != nil {
		w.Close()
		r.Close()
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	return m, nil
}

func open(ctx context.Context, path, txlock string, conns int) (*sql.DB, error) {
	q := url.Values{}
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "foreign_keys(ON)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Set("_txlock", txlock)
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	db.SetMaxOpenConns(conns)
	if err := db.PingContext(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open metadata %s: %w", path, err)
	}
	return db, nil
}
