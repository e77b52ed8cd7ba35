package service

import (
	"context"
	"fmt"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/blob/location"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
)

// Backup exports: a node serves a backup read-only over NBD with cairn's own
// NBD server, reading the repository only for what clients ask. They are
// recorded like volume exports and come back on the same URI when the node
// restarts. While one runs the backup is not forgotten (retention keeps it)
// and the repository holds a shared lock, so a prune waits for the export
// to stop.

func (s *Service) backupExportJSON(ctx context.Context, tx *meta.Tx, e meta.BackupExport) apitypes.BackupExport {
	out := apitypes.BackupExport{ID: e.ID, BackupID: e.BackupID, URI: nbdURI(e.Address, e.Port, e.Name, e.TLS), TLS: e.TLS,
		State: e.State, Node: e.NodeID, CreatedAt: e.CreatedAt}
	if n, err := tx.NodeByID(ctx, e.NodeID); err == nil {
		out.Node = n.Name
	}
	return out
}

// repositoryNode picks the node that works on a backup of repository r: a
// local repository's own node, else the node asked for, else any online one.
func (s *Service) repositoryNode(ctx context.Context, tx *meta.Tx, r meta.Repository, nodeRef string) (meta.Node, error) {
	if kind, _, _ := location.Parse(r.URL); kind == location.Local {
		n, err := tx.NodeByID(ctx, r.NodeID)
		if err != nil {
			return n, err
		}
		if nodeRef != "" {
			want, err := nodeByRef(ctx, tx, nodeRef)
			if err != nil {
				return want, err
			}
			if want.ID != n.ID {
				return n, core.Conflict("unreachable", "repository %q is a directory on node %q: only that node can read it", r.Name, n.Name)
			}
		}
		return n, nil
	}
	return s.pickNode(ctx, tx, nodeRef)
}

// finishedBackupOn finds a finished backup of the caller's project, its
// repository, and the node that reads it (nodeRef, or one that can).
func (s *Service) finishedBackupOn(ctx context.Context, tx *meta.Tx, c Caller, ref, nodeRef string) (meta.Backup, meta.Repository, meta.Node, error) {
	b, err := backupByRef(ctx, tx, c, ref)
	if err != nil {
		return b, meta.Repository{}, meta.Node{}, err
	}
	if b.State != apitypes.BackupReady && b.State != apitypes.BackupCorrupt {
		return b, meta.Repository{}, meta.Node{}, core.Conflict("not_ready", "backup %s is %s", b.ID, b.State)
	}
	r, err := tx.RepositoryByID(ctx, c.ProjectID, b.RepositoryID)
	if meta.IsNoRows(err) {
		return b, r, meta.Node{}, core.NotFound("the repository of backup %s no longer exists", b.ID)
	}
	if err != nil {
		return b, r, meta.Node{}, err
	}
	n, err := s.repositoryNode(ctx, tx, r, nodeRef)
	return b, r, n, err
}

// CreateBackupExport queues serving a disk image backup over NBD.
func (s *Service) CreateBackupExport(ctx context.Context, c Caller, ref string, req apitypes.BackupExportCreate) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		b, r, n, err := s.finishedBackupOn(ctx, tx, c, ref, req.Node)
		if err != nil {
			return nil, err
		}
		e := meta.BackupExport{ID: core.NewID(), ProjectID: c.ProjectID, BackupID: b.ID, RepositoryID: r.ID, NodeID: n.ID,
			Name: core.RandomToken(16), Address: s.cfg.ExportAddress, State: "starting", CreatedAt: s.now(), TLS: s.exportNeedsTLS(n)}
		if e.Address == "" {
			e.Address = "127.0.0.1"
		}
		if e.TLS && s.cfg.CA == nil {
			return nil, fmt.Errorf("exports on %s need TLS, but the server has no certificate authority", e.Address)
		}
		if err := tx.InsertBackupExport(ctx, e); err != nil {
			return nil, err
		}
		return s.backupExportTask(apitypes.OpBackupExport, e), nil
	})
}

func (s *Service) backupExportTask(op string, e meta.BackupExport) *meta.Task {
	return &meta.Task{ID: core.NewID(), Kind: op, State: apitypes.TaskQueued, ProjectID: e.ProjectID, NodeID: e.NodeID,
		ResourceType: "export", ResourceID: e.ID, CreatedAt: s.now(),
		Params: map[string]string{"export_id": e.ID, "backup_id": e.BackupID, "repository_id": e.RepositoryID}}
}

// backupExportByRef finds an export of a backup of the caller's project.
func backupExportByRef(ctx context.Context, tx *meta.Tx, c Caller, ref, id string) (meta.Backup, meta.BackupExport, error) {
	b, err := backupByRef(ctx, tx, c, ref)
	if err != nil {
		return b, meta.BackupExport{}, err
	}
	e, err := tx.BackupExportByID(ctx, c.ProjectID, id)
	if meta.IsNoRows(err) || (err == nil && e.BackupID != b.ID) {
		return b, e, core.NotFound("export %q of backup %s not found", id, b.ID)
	}
	return b, e, err
}

// ListBackupExports lists a backup's exports.
func (s *Service) ListBackupExports(ctx context.Context, c Caller, ref string) (apitypes.List[apitypes.BackupExport], error) {
	if err := c.requireUser(); err != nil {
		return apitypes.List[apitypes.BackupExport]{}, err
	}
	out := apitypes.List[apitypes.BackupExport]{Items: []apitypes.BackupExport{}}
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		b, err := backupByRef(ctx, tx, c, ref)
		if err != nil {
			return err
		}
		es, err := tx.BackupExports(ctx, b.ID, "")
		for _, e := range es {
			out.Items = append(out.Items, s.backupExportJSON(ctx, tx, e))
		}
		return err
	})
	return out, err
}

// GetBackupExport returns one export of a backup.
func (s *Service) GetBackupExport(ctx context.Context, c Caller, ref, id string) (apitypes.BackupExport, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.BackupExport{}, err
	}
	var out apitypes.BackupExport
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		_, e, err := backupExportByRef(ctx, tx, c, ref, id)
		if err == nil {
			out = s.backupExportJSON(ctx, tx, e)
		}
		return err
	})
	return out, err
}

// DeleteBackupExport queues stopping a backup export.
func (s *Service) DeleteBackupExport(ctx context.Context, c Caller, ref, id string) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		_, e, err := backupExportByRef(ctx, tx, c, ref, id)
		if err != nil {
			return nil, err
		}
		if e.State == "stopping" {
			return nil, core.Conflict("busy", "export %q is already stopping", id)
		}
		e.State = "stopping"
		if err := tx.UpdateBackupExport(ctx, e); err != nil {
			return nil, err
		}
		return s.backupExportTask(apitypes.OpBackupUnexport, e), nil
	})
}

// BackupExportCredentials issues a client certificate of the caller's
// project for a TLS backup export.
func (s *Service) BackupExportCredentials(ctx context.Context, c Caller, ref, id string) (apitypes.ExportCredentials, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.ExportCredentials{}, err
	}
	var e meta.BackupExport
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		var err error
		_, e, err = backupExportByRef(ctx, tx, c, ref, id)
		return err
	})
	if err != nil {
		return apitypes.ExportCredentials{}, err
	}
	if !e.TLS {
		return apitypes.ExportCredentials{}, core.Conflict("no_tls",
			"export %s of backup %s is served without TLS (on loopback): connect to its URI without credentials", e.ID, e.BackupID)
	}
	return s.clientCredentials(e.ID, e.ProjectID)
}

// nodeBackupExport is the plan a node serves backup export e by: the
// repository, the backup, and the export's name, address, port and TLS
// material (a server certificate is issued when it has none).
func (s *Service) nodeBackupExport(ctx context.Context, tx *meta.Tx, op string, e *meta.BackupExport) (apitypes.Plan, error) {
	r, err := tx.RepositoryByID(ctx, e.ProjectID, e.RepositoryID)
	if meta.IsNoRows(err) {
		return apitypes.Plan{}, core.NotFound("the repository of backup %s no longer exists", e.BackupID)
	}
	if err != nil {
		return apitypes.Plan{}, err
	}
	nr, err := s.nodeRepository(r)
	if err != nil {
		return apitypes.Plan{}, err
	}
	ne := apitypes.NodeExport{ID: e.ID, Name: e.Name, Port: e.Port, Address: e.Address}
	if e.TLS && op == apitypes.OpBackupExport {
		n, err := tx.NodeByID(ctx, e.NodeID)
		if err != nil && !meta.IsNoRows(err) {
			return apitypes.Plan{}, err
		}
		cert, key, issued, err := s.issueServerCert(e.ID, e.TLSCert, e.TLSKey, exportHosts(e.Address, n))
		if err != nil {
			return apitypes.Plan{}, err
		}
		if issued {
			e.TLSCert, e.TLSKey = cert, key
			if err := tx.UpdateBackupExport(ctx, *e); err != nil {
				return apitypes.Plan{}, err
			}
		}
		ne.TLS = &apitypes.NodeExportTLS{CACert: string(s.cfg.CA.CertPEM()), ServerCert: cert, ServerKey: key,
			ClientIdentity: ClientIdentity(e.ProjectID)}
	}
	return apitypes.Plan{Op: op, Repository: nr, Backup: &apitypes.NodeBackup{ID: e.BackupID, Tags: []string{}}, Export: &ne}, nil
}

// backupExportOutcome makes the plan of a backup export or unexport.
func (s *Service) backupExportOutcome(ctx context.Context, tx *meta.Tx, t meta.Task) (*outcome, error) {
	e, err := tx.BackupExportByID(ctx, t.ProjectID, t.Params["export_id"])
	if meta.IsNoRows(err) {
		return nil, core.NotFound("export %s no longer exists", t.Params["export_id"])
	}
	if err != nil {
		return nil, err
	}
	p, err := s.nodeBackupExport(ctx, tx, t.Kind, &e)
	if err != nil {
		return nil, err
	}
	return &outcome{plan: p}, nil
}

// commitBackupExport records the port of a started export, or drops a
// stopped one.
func (s *Service) commitBackupExport(ctx context.Context, tx *meta.Tx, t *meta.Task, r apitypes.NodeComplete) error {
	if t.Kind == apitypes.OpBackupUnexport {
		return tx.DeleteBackupExport(ctx, t.Params["export_id"])
	}
	e, err := tx.BackupExportByID(ctx, t.ProjectID, t.Params["export_id"])
	if err != nil {
		return err
	}
	e.Port, e.State = r.Port, "ready"
	if t.Result == nil {
		t.Result = map[string]string{}
	}
	t.Result["uri"] = nbdURI(e.Address, e.Port, e.Name, e.TLS)
	return tx.UpdateBackupExport(ctx, e)
}

// undoBackupExport drops an export that did not start, or marks one that
// did not stop ready again.
func (s *Service) undoBackupExport(ctx context.Context, tx *meta.Tx, t meta.Task, _ *apitypes.NodeComplete) error {
	if t.Kind == apitypes.OpBackupExport {
		return tx.DeleteBackupExport(ctx, t.Params["export_id"])
	}
	e, err := tx.BackupExportByID(ctx, t.ProjectID, t.Params["export_id"])
	if meta.IsNoRows(err) {
		return nil
	}
	if err != nil {
		return err
	}
	e.State = "ready"
	return tx.UpdateBackupExport(ctx, e)
}

// restoredBackupExports are the plans of the ready backup exports of node
// nodeID, which it serves again when it starts. One that cannot come back
// (its repository gone, no certificate) is marked error and skipped.
func (s *Service) restoredBackupExports(ctx context.Context, tx *meta.Tx, nodeID string) ([]apitypes.Plan, error) {
	es, err := tx.BackupExports(ctx, "", nodeID)
	if err != nil {
		return nil, err
	}
	var out []apitypes.Plan
	for i := range es {
		e := &es[i]
		if e.State != "ready" || e.Port == 0 {
			continue
		}
		p, err := s.nodeBackupExport(ctx, tx, apitypes.OpBackupExport, e)
		if err != nil {
			e.State = "error"
			if err := tx.UpdateBackupExport(ctx, *e); err != nil {
				return nil, err
			}
			continue
		}
		out = append(out, p)
	}
	return out, nil
}
