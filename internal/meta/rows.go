package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// Project is a tenant.
type Project struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

// Token is an API credential; only its hash is stored.
type Token struct {
	ID        string
	Name      string
	ProjectID string
	Role      string
	Hash      string
	CreatedAt time.Time
	LastUsed  *time.Time
}

// Node is a host running the node worker.
type Node struct {
	ID          string
	Name        string
	TokenHash   string
	Address     string
	Capacity    int64
	Available   int64
	HeartbeatAt *time.Time
	CreatedAt   time.Time
}

// Volume is one qcow2 file on a node.
type Volume struct {
	ID           string
	ProjectID    string
	Name         string
	Kind         string
	NodeID       string
	Size         int64
	Allocated    int64
	State        string
	StateDetail  string
	HeadParentID *string
	Labels       map[string]string
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

// Snapshot is an internal qcow2 snapshot of a volume; Tag is its name in the file.
type Snapshot struct {
	ID          string
	VolumeID    string
	Name        string
	Tag         string
	Description string
	ParentID    *string
	Kind        string // user or system
	State       string
	Size        int64
	Seq         int64
	CreatedAt   time.Time
	ScheduleID  string // the schedule that made it, or ""
	UniqueBytes int64  // what deleting it would free
}

// Export is an NBD export of a volume or of one of its snapshots.
type Export struct {
	ID         string
	VolumeID   string
	SnapshotID *string
	Writable   bool
	Name       string
	Address    string
	Port       int
	State      string
	CreatedAt  time.Time
	// TLS exports require TLS; TLSCert and TLSKey are the PEM server
	// certificate and key, empty until the export is first started.
	TLS     bool
	TLSCert string
	TLSKey  string
}

// Repository is a backup repository. Secrets is the sealed form of its
// password and S3 credentials (see service).
type Repository struct {
	ID          string
	ProjectID   string
	Name        string
	URL         string
	NodeID      string
	Default     bool
	SameDisk    bool
	State       string
	StateDetail string
	S3Region    string
	HasS3Keys   bool
	Secrets     string
	CreatedAt   time.Time
}

// Backup is a volume backup made through the server.
type Backup struct {
	ID           string
	ProjectID    string
	RepositoryID string
	VolumeID     string
	State        string
	BaseTag      string // the system snapshot it was read from
	ParentID     string
	LogicalSize  int64
	BytesRead    int64
	BytesAdded   int64
	DurationMS   int64
	UniqueBytes  int64  // stored bytes only this backup holds
	ScheduleID   string // the schedule that made it, or ""
	Error        string
	CreatedAt    time.Time
}

// BackupExport is a backup a node serves read-only over NBD.
type BackupExport struct {
	ID           string
	ProjectID    string
	BackupID     string
	RepositoryID string
	NodeID       string
	Name         string
	Address      string
	Port         int
	State        string
	TLS          bool
	TLSCert      string
	TLSKey       string
	CreatedAt    time.Time
}

// Task is one unit of asynchronous work.
type Task struct {
	ID              string
	Seq             int64
	Kind            string
	State           string
	ProjectID       string
	NodeID          string
	VolumeID        string
	TargetVolumeID  string
	ResourceType    string
	ResourceID      string
	Params          map[string]string
	BytesDone       int64
	BytesTotal      int64
	Error           string
	ErrorCode       string
	Log             []string
	Cancelable      bool
	CancelRequested bool
	Result          map[string]string
	CreatedAt       time.Time
	StartedAt       *time.Time
	FinishedAt      *time.Time
}

// ---- projects ----

func (t *Tx) InsertProject(ctx context.Context, p Project) error {
	_, err := t.exec(ctx, `INSERT INTO projects (id, name, created_at) VALUES (?, ?, ?)`, p.ID, p.Name, FormatTime(p.CreatedAt))
	return err
}

const projectCols = `id, name, created_at`

func scanProject(s interface{ Scan(...any) error }) (Project, error) {
	var p Project
	var created string
	err := s.Scan(&p.ID, &p.Name, &created)
	p.CreatedAt = parseTime(created)
	return p, err
}

// ProjectByName returns ErrNoRows when absent.
func (t *Tx) ProjectByName(ctx context.Context, name string) (Project, error) {
	return scanProject(t.queryRow(ctx, `SELECT `+projectCols+` FROM projects WHERE name = ?`, name))
}

func (t *Tx) ProjectByID(ctx context.Context, id string) (Project, error) {
	return scanProject(t.queryRow(ctx, `SELECT `+projectCols+` FROM projects WHERE id = ?`, id))
}

// Projects lists projects by name after the cursor (a name).
func (t *Tx) Projects(ctx context.Context, after string, limit int) ([]Project, error) {
	rows, err := t.query(ctx, `SELECT `+projectCols+` FROM projects WHERE name > ? ORDER BY name LIMIT ?`, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Project
	for rows.Next() {
		p, err := scanProject(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

func (t *Tx) DeleteProject(ctx context.Context, id string) error {
	if _, err := t.exec(ctx, `DELETE FROM tokens WHERE project_id = ?`, id); err != nil {
		return err
	}
	_, err := t.exec(ctx, `DELETE FROM projects WHERE id = ?`, id)
	return err
}

// ---- tokens ----

func (t *Tx) InsertToken(ctx context.Context, k Token) error {
	_, err := t.exec(ctx, `INSERT INTO tokens (id, name, project_id, role, hash, created_at) VALUES (?, ?, ?, ?, ?, ?)`,
		k.ID, k.Name, k.ProjectID, k.Role, k.Hash, FormatTime(k.CreatedAt))
	return err
}

const tokenCols = `id, name, project_id, role, hash, created_at, last_used_at`

func scanToken(s interface{ Scan(...any) error }) (Token, error) {
	var k Token
	var created string
	var used sql.NullString
	err := s.Scan(&k.ID, &k.Name, &k.ProjectID, &k.Role, &k.Hash, &created, &used)
	k.CreatedAt = parseTime(created)
	k.LastUsed = parseTimePtr(used)
	return k, err
}

func (t *Tx) TokenByHash(ctx context.Context, hash string) (Token, error) {
	return scanToken(t.queryRow(ctx, `SELECT `+tokenCols+` FROM tokens WHERE hash = ?`, hash))
}

func (t *Tx) TokenByID(ctx context.Context, id string) (Token, error) {
	return scanToken(t.queryRow(ctx, `SELECT `+tokenCols+` FROM tokens WHERE id = ?`, id))
}

// Tokens lists a project's tokens ordered by id after the cursor.
func (t *Tx) Tokens(ctx context.Context, projectID, after string, limit int) ([]Token, error) {
	rows, err := t.query(ctx, `SELECT `+tokenCols+` FROM tokens WHERE project_id = ? AND id > ? ORDER BY id LIMIT ?`, projectID, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Token
	for rows.Next() {
		k, err := scanToken(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

func (t *Tx) TouchToken(ctx context.Context, id string, at time.Time) error {
	_, err := t.exec(ctx, `UPDATE tokens SET last_used_at = ? WHERE id = ?`, FormatTime(at), id)
	return err
}

func (t *Tx) DeleteToken(ctx context.Context, id string) error {
	_, err := t.exec(ctx, `DELETE FROM tokens WHERE id = ?`, id)
	return err
}

// ---- nodes ----

func (t *Tx) InsertNode(ctx context.Context, n Node) error {
	_, err := t.exec(ctx, `INSERT INTO nodes (id, name, token_hash, address, capacity, available, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		n.ID, n.Name, n.TokenHash, n.Address, n.Capacity, n.Available, FormatTime(n.CreatedAt))
	return err
}

const nodeCols = `id, name, token_hash, address, capacity, available, heartbeat_at, created_at`

func scanNode(s interface{ Scan(...any) error }) (Node, error) {
	var n Node
	var hb sql.NullString
	var created string
	err := s.Scan(&n.ID, &n.Name, &n.TokenHash, &n.Address, &n.Capacity, &n.Available, &hb, &created)
	n.HeartbeatAt = parseTimePtr(hb)
	n.CreatedAt = parseTime(created)
	return n, err
}

func (t *Tx) NodeByID(ctx context.Context, id string) (Node, error) {
	return scanNode(t.queryRow(ctx, `SELECT `+nodeCols+` FROM nodes WHERE id = ?`, id))
}

func (t *Tx) NodeByName(ctx context.Context, name string) (Node, error) {
	return scanNode(t.queryRow(ctx, `SELECT `+nodeCols+` FROM nodes WHERE name = ?`, name))
}

func (t *Tx) NodeByTokenHash(ctx context.Context, hash string) (Node, error) {
	return scanNode(t.queryRow(ctx, `SELECT `+nodeCols+` FROM nodes WHERE token_hash = ?`, hash))
}

func (t *Tx) Nodes(ctx context.Context, after string, limit int) ([]Node, error) {
	rows, err := t.query(ctx, `SELECT `+nodeCols+` FROM nodes WHERE name > ? ORDER BY name LIMIT ?`, after, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Node
	for rows.Next() {
		n, err := scanNode(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

func (t *Tx) UpdateNodeHeartbeat(ctx context.Context, id, address string, capacity, available int64, at time.Time) error {
	_, err := t.exec(ctx, `UPDATE nodes SET address = ?, capacity = ?, available = ?, heartbeat_at = ? WHERE id = ?`,
		address, capacity, available, FormatTime(at), id)
	return err
}

func (t *Tx) SetNodeTokenHash(ctx context.Context, id, hash string) error {
	_, err := t.exec(ctx, `UPDATE nodes SET token_hash = ? WHERE id = ?`, hash, id)
	return err
}

func (t *Tx) DeleteNode(ctx context.Context, id string) error {
	_, err := t.exec(ctx, `DELETE FROM nodes WHERE id = ?`, id)
	return err
}

// ---- volumes ----

const volumeCols = `id, project_id, name, kind, node_id, size, allocated, state, state_detail, head_parent_id, labels, created_at, updated_at`

func scanVolume(s interface{ Scan(...any) error }) (Volume, error) {
	var v Volume
	var head sql.NullString
	var labels, created, updated string
	err := s.Scan(&v.ID, &v.ProjectID, &v.Name, &v.Kind, &v.NodeID, &v.Size, &v.Allocated, &v.State, &v.StateDetail, &head, &labels, &created, &updated)
	if err != nil {
		return v, err
	}
	v.HeadParentID = stringPtr(head)
	v.Labels = map[string]string{}
	_ = json.Unmarshal([]byte(labels), &v.Labels)
	v.CreatedAt = parseTime(created)
	v.UpdatedAt = parseTime(updated)
	return v, nil
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func (t *Tx) InsertVolume(ctx context.Context, v Volume) error {
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	_, err := t.exec(ctx, `INSERT INTO volumes (`+volumeCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		v.ID, v.ProjectID, v.Name, v.Kind, v.NodeID, v.Size, v.Allocated, v.State, v.StateDetail, nullString(v.HeadParentID),
		jsonText(v.Labels), FormatTime(v.CreatedAt), FormatTime(v.UpdatedAt))
	return err
}

// UpdateVolume writes every mutable field of v.
func (t *Tx) UpdateVolume(ctx context.Context, v Volume) error {
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	_, err := t.exec(ctx, `UPDATE volumes SET name = ?, kind = ?, node_id = ?, size = ?, allocated = ?, state = ?, state_detail = ?, head_parent_id = ?, labels = ?, updated_at = ? WHERE id = ?`,
		v.Name, v.Kind, v.NodeID, v.Size, v.Allocated, v.State, v.StateDetail, nullString(v.HeadParentID), jsonText(v.Labels), FormatTime(v.UpdatedAt), v.ID)
	return err
}

func (t *Tx) VolumeByID(ctx context.Context, id string) (Volume, error) {
	return scanVolume(t.queryRow(ctx, `SELECT `+volumeCols+` FROM volumes WHERE id = ?`, id))
}

// VolumeByName finds the project's volume of that name that is not deleted,
// or else the newest deleted one.
func (t *Tx) VolumeByName(ctx context.Context, projectID, name string) (Volume, error) {
	return scanVolume(t.queryRow(ctx, `SELECT `+volumeCols+` FROM volumes WHERE project_id = ? AND name = ?
		ORDER BY CASE WHEN state = 'deleted' THEN 1 ELSE 0 END, created_at DESC LIMIT 1`, projectID, name))
}

// LiveVolumeNameTaken reports whether a volume that is not deleted holds name.
func (t *Tx) LiveVolumeNameTaken(ctx context.Context, projectID, name, exceptID string) (bool, error) {
	var n int
	err := t.queryRow(ctx, `SELECT COUNT(*) FROM volumes WHERE project_id = ? AND name = ? AND state <> 'deleted' AND id <> ?`, projectID, name, exceptID).Scan(&n)
	return n > 0, err
}

// Volumes lists a project's volumes ordered by (name, id) after the cursor.
func (t *Tx) Volumes(ctx context.Context, projectID, afterName, afterID string, limit int) ([]Volume, error) {
	rows, err := t.query(ctx, `SELECT `+volumeCols+` FROM volumes WHERE project_id = ? AND (name > ? OR (name = ? AND id > ?)) ORDER BY name, id LIMIT ?`,
		projectID, afterName, afterName, afterID, limit)
	if err != nil {
		return nil, err
	}
	return collectVolumes(rows)
}

// VolumesOnNode lists every volume placed on a node.
func (t *Tx) VolumesOnNode(ctx context.Context, nodeID string) ([]Volume, error) {
	rows, err := t.query(ctx, `SELECT `+volumeCols+` FROM volumes WHERE node_id = ? ORDER BY id`, nodeID)
	if err != nil {
		return nil, err
	}
	return collectVolumes(rows)
}

func collectVolumes(rows *sql.Rows) ([]Volume, error) {
	defer rows.Close()
	var out []Volume
	for rows.Next() {
		v, err := scanVolume(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

func (t *Tx) CountVolumes(ctx context.Context, projectID string) (int, error) {
	var n int
	err := t.queryRow(ctx, `SELECT COUNT(*) FROM volumes WHERE project_id = ?`, projectID).Scan(&n)
	return n, err
}

// DeleteVolume removes a volume row with its snapshots and exports.
func (t *Tx) DeleteVolume(ctx context.Context, id string) error {
	for _, q := range []string{`DELETE FROM exports WHERE volume_id = ?`, `DELETE FROM snapshots WHERE volume_id = ?`, `DELETE FROM volumes WHERE id = ?`} {
		if _, err := t.exec(ctx, q, id); err != nil {
			return err
		}
	}
	return nil
}

// ---- snapshots ----

const snapshotCols = `id, volume_id, name, tag, description, parent_id, kind, state, size, seq, created_at, schedule_id, unique_bytes`

func scanSnapshot(s interface{ Scan(...any) error }) (Snapshot, error) {
	var n Snapshot
	var parent sql.NullString
	var created string
	err := s.Scan(&n.ID, &n.VolumeID, &n.Name, &n.Tag, &n.Description, &parent, &n.Kind, &n.State, &n.Size, &n.Seq, &created, &n.ScheduleID, &n.UniqueBytes)
	n.ParentID = stringPtr(parent)
	n.CreatedAt = parseTime(created)
	return n, err
}

// InsertSnapshot stores s with the next sequence number of its volume.
func (t *Tx) InsertSnapshot(ctx context.Context, s Snapshot) error {
	if s.Seq == 0 {
		if err := t.queryRow(ctx, `SELECT COALESCE(MAX(seq), 0) + 1 FROM snapshots WHERE volume_id = ?`, s.VolumeID).Scan(&s.Seq); err != nil {
			return err
		}
	}
	_, err := t.exec(ctx, `INSERT INTO snapshots (`+snapshotCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		s.ID, s.VolumeID, s.Name, s.Tag, s.Description, nullString(s.ParentID), s.Kind, s.State, s.Size, s.Seq, FormatTime(s.CreatedAt),
		s.ScheduleID, s.UniqueBytes)
	return err
}

func (t *Tx) UpdateSnapshot(ctx context.Context, s Snapshot) error {
	_, err := t.exec(ctx, `UPDATE snapshots SET name = ?, description = ?, parent_id = ?, state = ?, size = ? WHERE id = ?`,
		s.Name, s.Description, nullString(s.ParentID), s.State, s.Size, s.ID)
	return err
}

// SetSnapshotUniqueBytes stores what deleting each snapshot of a volume
// would free, by qcow2 tag.
func (t *Tx) SetSnapshotUniqueBytes(ctx context.Context, volumeID string, byTag map[string]int64) error {
	for tag, n := range byTag {
		if _, err := t.exec(ctx, `UPDATE snapshots SET unique_bytes = ? WHERE volume_id = ? AND tag = ?`, n, volumeID, tag); err != nil {
			return err
		}
	}
	return nil
}

func (t *Tx) DeleteSnapshot(ctx context.Context, id string) error {
	_, err := t.exec(ctx, `DELETE FROM snapshots WHERE id = ?`, id)
	return err
}

func (t *Tx) SnapshotByID(ctx context.Context, volumeID, id string) (Snapshot, error) {
	return scanSnapshot(t.queryRow(ctx, `SELECT `+snapshotCols+` FROM snapshots WHERE volume_id = ? AND id = ?`, volumeID, id))
}

func (t *Tx) SnapshotByName(ctx context.Context, volumeID, name string) (Snapshot, error) {
	return scanSnapshot(t.queryRow(ctx, `SELECT `+snapshotCols+` FROM snapshots WHERE volume_id = ? AND name = ?`, volumeID, name))
}

// Snapshots lists a volume's snapshots of the given kind ("" = all) in
// creation order after the cursor (a seq).
func (t *Tx) Snapshots(ctx context.Context, volumeID, kind string, afterSeq int64, limit int) ([]Snapshot, error) {
	q := `SELECT ` + snapshotCols + ` FROM snapshots WHERE volume_id = ? AND seq > ?`
	args := []any{volumeID, afterSeq}
	if kind != "" {
		q += ` AND kind = ?`
		args = append(args, kind)
	}
	q += ` ORDER BY seq LIMIT ?`
	args = append(args, limit)
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Snapshot
	for rows.Next() {
		s, err := scanSnapshot(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// AllSnapshots returns every snapshot of a volume in creation order.
func (t *Tx) AllSnapshots(ctx context.Context, volumeID string) ([]Snapshot, error) {
	return t.Snapshots(ctx, volumeID, "", 0, 1<<30)
}

// CountSnapshots counts a volume's snapshots of a kind ("" = all).
func (t *Tx) CountSnapshots(ctx context.Context, volumeID, kind string) (int, error) {
	// Snapshots being deleted do not count: they are as good as gone.
	q := `SELECT COUNT(*) FROM snapshots WHERE volume_id = ? AND state <> 'deleting'`
	args := []any{volumeID}
	if kind != "" {
		q += ` AND kind = ?`
		args = append(args, kind)
	}
	var n int
	err := t.queryRow(ctx, q, args...).Scan(&n)
	return n, err
}

// ---- repositories ----

const repositoryCols = `id, project_id, name, url, node_id, is_default, same_disk, state, state_detail, s3_region, has_s3_keys, secrets, created_at`

func scanRepository(s interface{ Scan(...any) error }) (Repository, error) {
	var r Repository
	var def, same, keys int
	var created string
	err := s.Scan(&r.ID, &r.ProjectID, &r.Name, &r.URL, &r.NodeID, &def, &same, &r.State, &r.StateDetail, &r.S3Region, &keys, &r.Secrets, &created)
	r.Default, r.SameDisk, r.HasS3Keys = def != 0, same != 0, keys != 0
	r.CreatedAt = parseTime(created)
	return r, err
}

func (t *Tx) InsertRepository(ctx context.Context, r Repository) error {
	_, err := t.exec(ctx, `INSERT INTO repositories (`+repositoryCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		r.ID, r.ProjectID, r.Name, r.URL, r.NodeID, boolInt(r.Default), boolInt(r.SameDisk), r.State, r.StateDetail,
		r.S3Region, boolInt(r.HasS3Keys), r.Secrets, FormatTime(r.CreatedAt))
	return err
}

// UpdateRepository stores a repository's state, default and same-disk flags.
func (t *Tx) UpdateRepository(ctx context.Context, r Repository) error {
	_, err := t.exec(ctx, `UPDATE repositories SET state = ?, state_detail = ?, is_default = ?, same_disk = ? WHERE id = ?`,
		r.State, r.StateDetail, boolInt(r.Default), boolInt(r.SameDisk), r.ID)
	return err
}

// ClearDefaultRepository unsets the default flag of every repository of a project.
func (t *Tx) ClearDefaultRepository(ctx context.Context, projectID string) error {
	_, err := t.exec(ctx, `UPDATE repositories SET is_default = 0 WHERE project_id = ?`, projectID)
	return err
}

func (t *Tx) DeleteRepository(ctx context.Context, id string) error {
	_, err := t.exec(ctx, `DELETE FROM repositories WHERE id = ?`, id)
	return err
}

func (t *Tx) RepositoryByID(ctx context.Context, projectID, id string) (Repository, error) {
	return scanRepository(t.queryRow(ctx, `SELECT `+repositoryCols+` FROM repositories WHERE project_id = ? AND id = ?`, projectID, id))
}

func (t *Tx) RepositoryByName(ctx context.Context, projectID, name string) (Repository, error) {
	return scanRepository(t.queryRow(ctx, `SELECT `+repositoryCols+` FROM repositories WHERE project_id = ? AND name = ?`, projectID, name))
}

// RepositoryByURL returns the repository at url, in any project.
func (t *Tx) RepositoryByURL(ctx context.Context, url string) (Repository, error) {
	return scanRepository(t.queryRow(ctx, `SELECT `+repositoryCols+` FROM repositories WHERE url = ? LIMIT 1`, url))
}

// DefaultRepository returns a project's default repository.
func (t *Tx) DefaultRepository(ctx context.Context, projectID string) (Repository, error) {
	return scanRepository(t.queryRow(ctx, `SELECT `+repositoryCols+` FROM repositories WHERE project_id = ? AND is_default = 1`, projectID))
}

// Repositories lists a project's repositories by name, after afterName.
func (t *Tx) Repositories(ctx context.Context, projectID, afterName string, limit int) ([]Repository, error) {
	rows, err := t.query(ctx, `SELECT `+repositoryCols+` FROM repositories WHERE project_id = ? AND name > ? ORDER BY name LIMIT ?`,
		projectID, afterName, limit)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Repository
	for rows.Next() {
		r, err := scanRepository(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

// ---- backups ----

const backupCols = `id, project_id, repository_id, volume_id, state, base_tag, parent_id, logical_size, bytes_read, bytes_added, duration_ms, error, created_at, unique_bytes, schedule_id`

func scanBackup(s interface{ Scan(...any) error }) (Backup, error) {
	var b Backup
	var created string
	err := s.Scan(&b.ID, &b.ProjectID, &b.RepositoryID, &b.VolumeID, &b.State, &b.BaseTag, &b.ParentID, &b.LogicalSize,
		&b.BytesRead, &b.BytesAdded, &b.DurationMS, &b.Error, &created, &b.UniqueBytes, &b.ScheduleID)
	b.CreatedAt = parseTime(created)
	return b, err
}

func (t *Tx) InsertBackup(ctx context.Context, b Backup) error {
	_, err := t.exec(ctx, `INSERT INTO backups (`+backupCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		b.ID, b.ProjectID, b.RepositoryID, b.VolumeID, b.State, b.BaseTag, b.ParentID, b.LogicalSize, b.BytesRead,
		b.BytesAdded, b.DurationMS, b.Error, FormatTime(b.CreatedAt), b.UniqueBytes, b.ScheduleID)
	return err
}

func (t *Tx) DeleteBackup(ctx context.Context, id string) error {
	_, err := t.exec(ctx, `DELETE FROM backups WHERE id = ?`, id)
	return err
}

// UpdateBackup stores everything of a backup but its identity.
func (t *Tx) UpdateBackup(ctx context.Context, b Backup) error {
	_, err := t.exec(ctx, `UPDATE backups SET state = ?, base_tag = ?, parent_id = ?, logical_size = ?, bytes_read = ?,
		bytes_added = ?, duration_ms = ?, error = ?, created_at = ?, unique_bytes = ? WHERE id = ?`,
		b.State, b.BaseTag, b.ParentID, b.LogicalSize, b.BytesRead, b.BytesAdded, b.DurationMS, b.Error, FormatTime(b.CreatedAt),
		b.UniqueBytes, b.ID)
	return err
}

func (t *Tx) BackupByID(ctx context.Context, projectID, id string) (Backup, error) {
	return scanBackup(t.queryRow(ctx, `SELECT `+backupCols+` FROM backups WHERE project_id = ? AND id = ?`, projectID, id))
}

// BackupsByPrefix returns up to limit backups of a project whose id starts with prefix.
func (t *Tx) BackupsByPrefix(ctx context.Context, projectID, prefix string, limit int) ([]Backup, error) {
	return t.backups(ctx, `SELECT `+backupCols+` FROM backups WHERE project_id = ? AND id LIKE ? ORDER BY id LIMIT ?`,
		projectID, prefix+"%", limit)
}

// BaseBackup returns the newest ready backup of a volume in a repository
// that still has its system snapshot: the base of the next backup.
func (t *Tx) BaseBackup(ctx context.Context, volumeID, repositoryID string) (Backup, error) {
	return scanBackup(t.queryRow(ctx, `SELECT `+backupCols+` FROM backups WHERE volume_id = ? AND repository_id = ?
		AND state IN ('ready', 'corrupt') AND base_tag <> '' ORDER BY created_at DESC, id DESC LIMIT 1`, volumeID, repositoryID))
}

// BackupFilter selects backups; empty fields select all.
type BackupFilter struct {
	ProjectID    string
	VolumeID     string
	RepositoryID string
	// After is a cursor: backups older than (CreatedAt, ID) of the last one seen.
	AfterTime string
	AfterID   string
	Limit     int
}

// Backups lists backups newest first.
func (t *Tx) Backups(ctx context.Context, f BackupFilter) ([]Backup, error) {
	q := `SELECT ` + backupCols + ` FROM backups WHERE project_id = ?`
	args := []any{f.ProjectID}
	if f.VolumeID != "" {
		q += ` AND volume_id = ?`
		args = append(args, f.VolumeID)
	}
	if f.RepositoryID != "" {
		q += ` AND repository_id = ?`
		args = append(args, f.RepositoryID)
	}
	if f.AfterTime != "" {
		q += ` AND (created_at < ? OR (created_at = ? AND id < ?))`
		args = append(args, f.AfterTime, f.AfterTime, f.AfterID)
	}
	q += ` ORDER BY created_at DESC, id DESC LIMIT ?`
	args = append(args, f.Limit)
	return t.backups(ctx, q, args...)
}

func (t *Tx) backups(ctx context.Context, q string, args ...any) ([]Backup, error) {
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Backup
	for rows.Next() {
		b, err := scanBackup(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, b)
	}
	return out, rows.Err()
}

// SetUniqueBytes stores what each backup of a repository alone holds;
// backups missing from sizes hold nothing alone.
func (t *Tx) SetUniqueBytes(ctx context.Context, repositoryID string, sizes map[string]int64) error {
	if _, err := t.exec(ctx, `UPDATE backups SET unique_bytes = 0 WHERE repository_id = ?`, repositoryID); err != nil {
		return err
	}
	for id, n := range sizes {
		if _, err := t.exec(ctx, `UPDATE backups SET unique_bytes = ? WHERE repository_id = ? AND id = ?`, n, repositoryID, id); err != nil {
			return err
		}
	}
	return nil
}

// ---- backup exports ----

const backupExportCols = `id, project_id, backup_id, repository_id, node_id, name, address, port, state, tls, tls_cert, tls_key, created_at`

func scanBackupExport(s interface{ Scan(...any) error }) (BackupExport, error) {
	var e BackupExport
	var tls int
	var created string
	err := s.Scan(&e.ID, &e.ProjectID, &e.BackupID, &e.RepositoryID, &e.NodeID, &e.Name, &e.Address, &e.Port, &e.State,
		&tls, &e.TLSCert, &e.TLSKey, &created)
	e.TLS = tls != 0
	e.CreatedAt = parseTime(created)
	return e, err
}

func (t *Tx) InsertBackupExport(ctx context.Context, e BackupExport) error {
	_, err := t.exec(ctx, `INSERT INTO backup_exports (`+backupExportCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.ProjectID, e.BackupID, e.RepositoryID, e.NodeID, e.Name, e.Address, e.Port, e.State, boolInt(e.TLS),
		e.TLSCert, e.TLSKey, FormatTime(e.CreatedAt))
	return err
}

// UpdateBackupExport stores an export's port, state and server certificate.
func (t *Tx) UpdateBackupExport(ctx context.Context, e BackupExport) error {
	_, err := t.exec(ctx, `UPDATE backup_exports SET port = ?, state = ?, tls_cert = ?, tls_key = ? WHERE id = ?`,
		e.Port, e.State, e.TLSCert, e.TLSKey, e.ID)
	return err
}

func (t *Tx) DeleteBackupExport(ctx context.Context, id string) error {
	_, err := t.exec(ctx, `DELETE FROM backup_exports WHERE id = ?`, id)
	return err
}

func (t *Tx) BackupExportByID(ctx context.Context, projectID, id string) (BackupExport, error) {
	return scanBackupExport(t.queryRow(ctx, `SELECT `+backupExportCols+` FROM backup_exports WHERE project_id = ? AND id = ?`, projectID, id))
}

// BackupExports lists the exports of a backup (backupID set) or of every
// backup a node serves (nodeID set), oldest first.
func (t *Tx) BackupExports(ctx context.Context, backupID, nodeID string) ([]BackupExport, error) {
	q, arg := `SELECT `+backupExportCols+` FROM backup_exports WHERE backup_id = ? ORDER BY created_at, id`, backupID
	if backupID == "" {
		q, arg = `SELECT `+backupExportCols+` FROM backup_exports WHERE node_id = ? ORDER BY created_at, id`, nodeID
	}
	rows, err := t.query(ctx, q, arg)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []BackupExport
	for rows.Next() {
		e, err := scanBackupExport(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// ---- exports ----

const exportCols = `id, volume_id, snapshot_id, writable, name, address, port, state, created_at, tls, tls_cert, tls_key`

func scanExport(s interface{ Scan(...any) error }) (Export, error) {
	var e Export
	var snap sql.NullString
	var writable, tls int
	var created string
	err := s.Scan(&e.ID, &e.VolumeID, &snap, &writable, &e.Name, &e.Address, &e.Port, &e.State, &created, &tls, &e.TLSCert, &e.TLSKey)
	e.SnapshotID = stringPtr(snap)
	e.Writable = writable != 0
	e.TLS = tls != 0
	e.CreatedAt = parseTime(created)
	return e, err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (t *Tx) InsertExport(ctx context.Context, e Export) error {
	_, err := t.exec(ctx, `INSERT INTO exports (`+exportCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		e.ID, e.VolumeID, nullString(e.SnapshotID), boolInt(e.Writable), e.Name, e.Address, e.Port, e.State, FormatTime(e.CreatedAt),
		boolInt(e.TLS), e.TLSCert, e.TLSKey)
	return err
}

// UpdateExport stores an export's port, state, address and server
// certificate; the rest of an export never changes.
func (t *Tx) UpdateExport(ctx context.Context, e Export) error {
	_, err := t.exec(ctx, `UPDATE exports SET port = ?, state = ?, address = ?, tls_cert = ?, tls_key = ? WHERE id = ?`,
		e.Port, e.State, e.Address, e.TLSCert, e.TLSKey, e.ID)
	return err
}

func (t *Tx) DeleteExport(ctx context.Context, id string) error {
	_, err := t.exec(ctx, `DELETE FROM exports WHERE id = ?`, id)
	return err
}

func (t *Tx) ExportByID(ctx context.Context, volumeID, id string) (Export, error) {
	return scanExport(t.queryRow(ctx, `SELECT `+exportCols+` FROM exports WHERE volume_id = ? AND id = ?`, volumeID, id))
}

// Exports lists a volume's exports in creation order.
func (t *Tx) Exports(ctx context.Context, volumeID string) ([]Export, error) {
	rows, err := t.query(ctx, `SELECT `+exportCols+` FROM exports WHERE volume_id = ? ORDER BY created_at, id`, volumeID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Export
	for rows.Next() {
		e, err := scanExport(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

// ---- tasks ----

const taskCols = `id, seq, kind, state, project_id, node_id, volume_id, target_volume_id, resource_type, resource_id, params,
	bytes_done, bytes_total, error, error_code, log, cancelable, cancel_requested, result, created_at, started_at, finished_at`

func scanTask(s interface{ Scan(...any) error }) (Task, error) {
	var k Task
	var params, logText, result, created string
	var started, finished sql.NullString
	var cancelable, cancelReq int
	err := s.Scan(&k.ID, &k.Seq, &k.Kind, &k.State, &k.ProjectID, &k.NodeID, &k.VolumeID, &k.TargetVolumeID, &k.ResourceType, &k.ResourceID, &params,
		&k.BytesDone, &k.BytesTotal, &k.Error, &k.ErrorCode, &logText, &cancelable, &cancelReq, &result, &created, &started, &finished)
	if err != nil {
		return k, err
	}
	k.Params = map[string]string{}
	_ = json.Unmarshal([]byte(params), &k.Params)
	k.Result = map[string]string{}
	_ = json.Unmarshal([]byte(result), &k.Result)
	_ = json.Unmarshal([]byte(logText), &k.Log)
	k.Cancelable = cancelable != 0
	k.CancelRequested = cancelReq != 0
	k.CreatedAt = parseTime(created)
	k.StartedAt = parseTimePtr(started)
	k.FinishedAt = parseTimePtr(finished)
	return k, nil
}

// InsertTask stores k with the next global sequence number, which orders tasks.
func (t *Tx) InsertTask(ctx context.Context, k *Task) error {
	if err := t.queryRow(ctx, `SELECT COALESCE(MAX(seq), 0) + 1 FROM tasks`).Scan(&k.Seq); err != nil {
		return err
	}
	if k.Params == nil {
		k.Params = map[string]string{}
	}
	if k.Result == nil {
		k.Result = map[string]string{}
	}
	if k.Log == nil {
		k.Log = []string{}
	}
	_, err := t.exec(ctx, `INSERT INTO tasks (`+taskCols+`) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
		k.ID, k.Seq, k.Kind, k.State, k.ProjectID, k.NodeID, k.VolumeID, k.TargetVolumeID, k.ResourceType, k.ResourceID, jsonText(k.Params),
		k.BytesDone, k.BytesTotal, k.Error, k.ErrorCode, jsonText(k.Log), boolInt(k.Cancelable), boolInt(k.CancelRequested), jsonText(k.Result),
		FormatTime(k.CreatedAt), timePtrString(k.StartedAt), timePtrString(k.FinishedAt))
	return err
}

// UpdateTask writes every mutable field of k.
func (t *Tx) UpdateTask(ctx context.Context, k Task) error {
	if k.Log == nil {
		k.Log = []string{}
	}
	_, err := t.exec(ctx, `UPDATE tasks SET state = ?, resource_id = ?, bytes_done = ?, bytes_total = ?, error = ?, error_code = ?, log = ?, cancel_requested = ?,
		result = ?, started_at = ?, finished_at = ?, params = ? WHERE id = ?`,
		k.State, k.ResourceID, k.BytesDone, k.BytesTotal, k.Error, k.ErrorCode, jsonText(k.Log), boolInt(k.CancelRequested), jsonText(k.Result),
		timePtrString(k.StartedAt), timePtrString(k.FinishedAt), jsonText(k.Params), k.ID)
	return err
}

func (t *Tx) TaskByID(ctx context.Context, id string) (Task, error) {
	return scanTask(t.queryRow(ctx, `SELECT `+taskCols+` FROM tasks WHERE id = ?`, id))
}

// TaskFilter selects tasks for a list; empty fields match everything.
type TaskFilter struct {
	ProjectID string
	NodeID    string
	VolumeID  string
	States    []string
	BeforeSeq int64 // cursor: only tasks with a smaller seq (0 = none)
	Limit     int
}

// QueuedTaskFor returns the oldest queued task of a kind on a resource.
func (t *Tx) QueuedTaskFor(ctx context.Context, kind, resourceID string) (Task, error) {
	return scanTask(t.queryRow(ctx, `SELECT `+taskCols+` FROM tasks WHERE kind = ? AND resource_id = ? AND state = 'queued' ORDER BY seq LIMIT 1`,
		kind, resourceID))
}

// LastSucceededTask returns the newest succeeded task of a kind on a resource.
func (t *Tx) LastSucceededTask(ctx context.Context, kind, resourceID string) (Task, error) {
	return scanTask(t.queryRow(ctx, `SELECT `+taskCols+` FROM tasks WHERE kind = ? AND resource_id = ? AND state = 'succeeded' ORDER BY seq DESC LIMIT 1`,
		kind, resourceID))
}

// Tasks lists tasks newest first.
func (t *Tx) Tasks(ctx context.Context, f TaskFilter) ([]Task, error) {
	var where []string
	var args []any
	if f.ProjectID != "" {
		where = append(where, "project_id = ?")
		args = append(args, f.ProjectID)
	}
	if f.NodeID != "" {
		where = append(where, "node_id = ?")
		args = append(args, f.NodeID)
	}
	if f.VolumeID != "" {
		where = append(where, "(volume_id = ? OR target_volume_id = ?)")
		args = append(args, f.VolumeID, f.VolumeID)
	}
	if len(f.States) > 0 {
		where = append(where, "state IN ("+strings.TrimSuffix(strings.Repeat("?, ", len(f.States)), ", ")+")")
		for _, s := range f.States {
			args = append(args, s)
		}
	}
	if f.BeforeSeq > 0 {
		where = append(where, "seq < ?")
		args = append(args, f.BeforeSeq)
	}
	q := `SELECT ` + taskCols + ` FROM tasks`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	if f.Limit <= 0 {
		f.Limit = 1 << 30
	}
	q += fmt.Sprintf(" ORDER BY seq DESC LIMIT %d", f.Limit)
	rows, err := t.query(ctx, q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []Task
	for rows.Next() {
		k, err := scanTask(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

// NextRunnableTask returns the oldest queued task of a node none of whose
// volumes has an older task queued or running: tasks on one volume run one at
// a time in submission order. ErrNoRows when there is none.
func (t *Tx) NextRunnableTask(ctx context.Context, nodeID string) (Task, error) {
	return scanTask(t.queryRow(ctx, `SELECT `+taskCols+` FROM tasks t WHERE t.node_id = ? AND t.state = 'queued'
		AND NOT EXISTS (SELECT 1 FROM tasks u WHERE u.seq < t.seq AND u.state IN ('queued', 'running')
			AND (  (t.volume_id <> '' AND (u.volume_id = t.volume_id OR u.target_volume_id = t.volume_id))
			    OR (t.target_volume_id <> '' AND (u.volume_id = t.target_volume_id OR u.target_volume_id = t.target_volume_id))))
		ORDER BY t.seq LIMIT 1`, nodeID))
}

// CountTasksByKindState returns counts for metrics.
func (t *Tx) CountTasksByKindState(ctx context.Context) (map[[2]string]int, error) {
	rows, err := t.query(ctx, `SELECT kind, state, COUNT(*) FROM tasks GROUP BY kind, state`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[[2]string]int{}
	for rows.Next() {
		var k, s string
		var n int
		if err := rows.Scan(&k, &s, &n); err != nil {
			return nil, err
		}
		out[[2]string{k, s}] = n
	}
	return out, rows.Err()
}

// CountAll returns the number of volumes and of snapshots by state.
func (t *Tx) CountAll(ctx context.Context) (volumes map[string]int, snapshots map[string]int, err error) {
	volumes, snapshots = map[string]int{}, map[string]int{}
	for _, c := range []struct {
		q string
		m map[string]int
	}{{`SELECT state, COUNT(*) FROM volumes GROUP BY state`, volumes}, {`SELECT state, COUNT(*) FROM snapshots WHERE kind = 'user' GROUP BY state`, snapshots}} {
		rows, err := t.query(ctx, c.q)
		if err != nil {
			return nil, nil, err
		}
		for rows.Next() {
			var s string
			var n int
			if err := rows.Scan(&s, &n); err != nil {
				rows.Close()
				return nil, nil, err
			}
			c.m[s] = n
		}
		rows.Close()
	}
	return volumes, snapshots, nil
}
