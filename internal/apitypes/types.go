// Package apitypes holds the JSON bodies of cairn's REST API (/v1), shared by the
// server (httpapi) and its Go client. The OpenAPI document served at
// /v1/openapi.json describes exactly these types; a test keeps them in step.
package apitypes

import "time"

// Error is the body of every non-2xx answer.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// List is the shape of every list answer. NextCursor is empty on the last page.
type List[T any] struct {
	Items      []T    `json:"items"`
	NextCursor string `json:"next_cursor,omitempty"`
}

// Roles of a token.
const (
	RoleAdmin    = "admin"
	RoleOperator = "operator"
	RoleViewer   = "viewer"
)

// SystemProject holds admin tokens and no volumes; DefaultProject is where an
// admin acts without --project.
const (
	SystemProject  = "system"
	DefaultProject = "default"
)

// HeaderProject lets an admin token act in another project.
const HeaderProject = "Cairn-Project"

type Project struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	CreatedAt time.Time `json:"created_at"`
}

type ProjectCreate struct {
	Name string `json:"name"`
}

type Token struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Project   string     `json:"project"` // project name
	Role      string     `json:"role"`
	CreatedAt time.Time  `json:"created_at"`
	LastUsed  *time.Time `json:"last_used_at"`
	// Secret is set only in the answer to a create, once.
	Secret string `json:"secret,omitempty"`
}

// Whoami is the answer of GET /v1/whoami: the caller's token and the project
// it acts in (the Cairn-Project one for an admin that set it).
type Whoami struct {
	Token   Token   `json:"token"`
	Project Project `json:"project"`
}

type TokenCreate struct {
	Name    string `json:"name"`
	Project string `json:"project"` // defaults to the caller's project
	Role    string `json:"role"`
}

// Volume kinds and states.
const (
	KindRoot = "root"
	KindData = "data"

	VolumeCreating  = "creating"
	VolumeReady     = "ready"
	VolumeApplying  = "applying"
	VolumeGrowing   = "growing"
	VolumeDeleting  = "deleting"
	VolumeDeleted   = "deleted" // live disk gone, snapshots kept
	VolumeError     = "error"
	VolumeImporting = "importing"
)

type Volume struct {
	ID            string            `json:"id"`
	Name          string            `json:"name"`
	Project       string            `json:"project"`
	Kind          string            `json:"kind"`
	Node          string            `json:"node"`
	Size          int64             `json:"size"`
	Allocated     int64             `json:"allocated"`
	Format        string            `json:"format"`
	State         string            `json:"state"`
	StateDetail   string            `json:"state_detail,omitempty"`
	HeadParentID  *string           `json:"head_parent_id"`
	SnapshotCount int               `json:"snapshot_count"`
	Exports       []Export          `json:"exports"`
	Labels        map[string]string `json:"labels"`
	CreatedAt     time.Time         `json:"created_at"`
	UpdatedAt     time.Time         `json:"updated_at"`
}

type VolumeCreate struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	Kind string `json:"kind,omitempty"` // root or data (default data)
	Node string `json:"node,omitempty"`
}

type VolumeImport struct {
	Name   string `json:"name"`
	Path   string `json:"path"`             // on the node's host
	Format string `json:"format,omitempty"` // qcow2, raw, vmdk, vhdx; probed when empty
	Kind   string `json:"kind,omitempty"`
	Node   string `json:"node,omitempty"`
}

type VolumeGrow struct {
	Size int64 `json:"size"`
}

// Snapshot states.
const (
	SnapshotCreating = "creating"
	SnapshotReady    = "ready"
	SnapshotDeleting = "deleting"
	SnapshotOrphan   = "orphan"  // found in the qcow2 file, unknown to the metadata
	SnapshotMissing  = "missing" // in the metadata, absent from the qcow2 file
)

type Snapshot struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Description string    `json:"description"`
	VolumeID    string    `json:"volume_id"`
	ParentID    *string   `json:"parent_id"`
	State       string    `json:"state"`
	Size        int64     `json:"size"` // virtual size of the disk at the snapshot
	Kind        string    `json:"kind"` // "disk"
	CreatedAt   time.Time `json:"created_at"`
	// UniqueBytes is what deleting the snapshot would free in the volume's
	// file (its clusters no other snapshot and not the live disk use).
	UniqueBytes int64 `json:"unique_bytes"`
}

type SnapshotCreate struct {
	Name        string `json:"name,omitempty"` // generated when empty
	Description string `json:"description,omitempty"`
}

type SnapshotApply struct {
	SaveCurrent bool `json:"save_current,omitempty"`
	// Name for the volume when the volume is deleted and its name was taken.
	Name string `json:"name,omitempty"`
}

type SnapshotToVolume struct {
	Name string `json:"name"`
	Node string `json:"node,omitempty"`
}

type Export struct {
	ID         string  `json:"id"`
	VolumeID   string  `json:"volume_id"`
	SnapshotID *string `json:"snapshot_id"`
	URI        string  `json:"uri"`
	Writable   bool    `json:"writable"`
	// TLS exports (URI nbds://...) admit only clients presenting a
	// certificate of the export's project: see ExportCredentials.
	TLS       bool      `json:"tls"`
	State     string    `json:"state"` // starting, ready, stopping, error
	CreatedAt time.Time `json:"created_at"`
}

// ExportCredentials are what a client needs to connect to a TLS export, all
// PEM: the CA that signed the export's server certificate, and a client
// certificate and key of the caller's project. Identity is the client
// certificate's distinguished name, the one the export admits.
type ExportCredentials struct {
	CACert     string `json:"ca_cert"`
	ClientCert string `json:"client_cert"`
	ClientKey  string `json:"client_key"`
	Identity   string `json:"identity"`
}

type ExportCreate struct {
	Snapshot string `json:"snapshot,omitempty"` // name or id; empty = the live volume
	Writable bool   `json:"writable,omitempty"`
}

// Task states.
const (
	TaskQueued    = "queued"
	TaskRunning   = "running"
	TaskSucceeded = "succeeded"
	TaskFailed    = "failed"
	TaskCanceled  = "canceled"
)

// TaskDone reports whether a task state is final.
func TaskDone(state string) bool {
	return state == TaskSucceeded || state == TaskFailed || state == TaskCanceled
}

type Task struct {
	ID           string     `json:"id"`
	Kind         string     `json:"kind"`
	State        string     `json:"state"`
	Project      string     `json:"project"`
	Node         string     `json:"node"`
	VolumeID     string     `json:"volume_id,omitempty"`
	ResourceType string     `json:"resource_type"` // volume, snapshot, export
	ResourceID   string     `json:"resource_id"`
	BytesDone    int64      `json:"bytes_done"`
	BytesTotal   int64      `json:"bytes_total"`
	Error        string     `json:"error,omitempty"`
	ErrorCode    string     `json:"error_code,omitempty"`
	Log          []string   `json:"log"`
	Cancelable   bool       `json:"cancelable"`
	CreatedAt    time.Time  `json:"created_at"`
	StartedAt    *time.Time `json:"started_at"`
	FinishedAt   *time.Time `json:"finished_at"`
	// Result names resources the task made, e.g. {"saved_snapshot_id": "..."}.
	Result map[string]string `json:"result,omitempty"`
}

// Node states.
const (
	NodeOnline  = "online"
	NodeOffline = "offline"
)

type Node struct {
	ID          string     `json:"id"`
	Name        string     `json:"name"`
	Address     string     `json:"address"`
	State       string     `json:"state"`
	Capacity    int64      `json:"capacity"`  // bytes of the data directory's filesystem
	Available   int64      `json:"available"` // bytes free there
	HeartbeatAt *time.Time `json:"heartbeat_at"`
	CreatedAt   time.Time  `json:"created_at"`
	// Token is set only in the answer to a create, once.
	Token string `json:"token,omitempty"`
}

type NodeCreate struct {
	Name string `json:"name"`
}

// Backup states (backups made through the server; `cairn repo` shows
// committed backups only and leaves state out).
const (
	BackupCreating = "creating"
	BackupReady    = "ready"
	BackupFailed   = "failed"
	BackupCorrupt  = "corrupt" // a verify found damage in data it needs
)

// Backup is one backup in a repository: of a volume (a disk image) or of a
// file tree. Its id is its manifest's id in the repository, so `cairn repo`
// finds it; `cairn repo` prints backups with this schema too.
type Backup struct {
	ID             string    `json:"id"`
	Kind           string    `json:"kind"` // image or files
	State          string    `json:"state,omitempty"`
	VolumeID       string    `json:"volume_id,omitempty"`
	Volume         string    `json:"volume,omitempty"`     // the volume's name
	Repository     string    `json:"repository,omitempty"` // the repository's name
	CreatedAt      time.Time `json:"created_at"`           // the point in time the backup holds
	Host           string    `json:"host,omitempty"`
	Paths          []string  `json:"paths"`
	Tags           []string  `json:"tags"`
	ParentBackupID string    `json:"parent_backup_id,omitempty"`
	LogicalSize    int64     `json:"logical_size"` // the image's size, or the files' total
	BytesRead      int64     `json:"bytes_read"`   // read from the source to make it
	BytesAdded     int64     `json:"bytes_added"`  // stored bytes it added to the repository
	Files          int64     `json:"files,omitempty"`
	SkippedEntries int64     `json:"skipped_entries,omitempty"` // entries a file backup could not read and left out: it is incomplete
	DurationMS     int64     `json:"duration_ms"`
	// UniqueBytes is the stored size only this backup holds: what forgetting
	// it and pruning would free. Server backups only; refreshed after each
	// backup and forget in the repository.
	UniqueBytes *int64 `json:"unique_bytes,omitempty"`
	Error       string `json:"error,omitempty"`
}

// BackupExport is a backup served read-only over NBD by a node, straight
// from the repository: nothing is restored first. URI is nbd://HOST:PORT/NAME,
// or nbds://... when it requires TLS (client credentials: GET
// /v1/backups/{b}/exports/{e}/credentials).
type BackupExport struct {
	ID        string    `json:"id"`
	BackupID  string    `json:"backup_id"`
	URI       string    `json:"uri"`
	TLS       bool      `json:"tls"`
	State     string    `json:"state"` // starting, ready, stopping, error
	Node      string    `json:"node"`
	CreatedAt time.Time `json:"created_at"`
}

// BackupExportCreate asks for a backup export.
type BackupExportCreate struct {
	Node string `json:"node,omitempty"` // default: a node that reaches the repository
}

// BackupCreate asks for a backup of a volume.
type BackupCreate struct {
	Repository string `json:"repository,omitempty"` // name or id; default: the project's default repository
}

// BackupRestore restores a backup: into a new volume, into a file on a
// node's host (.qcow2, or raw and sparse for any other name), or in place
// (the backup's volume gets the backup's content, after a safety snapshot).
// Exactly one of ToVolume, ToFile and InPlace.
type BackupRestore struct {
	InPlace  bool   `json:"in_place,omitempty"`
	ToVolume string `json:"to_volume,omitempty"` // the new volume's name
	ToFile   string `json:"to_file,omitempty"`   // an absolute path on the node's host
	Node     string `json:"node,omitempty"`      // where; default: a node that reaches the repository
	Kind     string `json:"kind,omitempty"`      // of the new volume: root or data (default data)
}

// BackupForget removes a volume's backups that a retention policy does not
// keep (restic's rules; counts and periods per repository). At least one
// rule is needed; manual backups never go by themselves.
type BackupForget struct {
	Repository  string `json:"repository,omitempty"` // only this repository; default: all
	KeepLast    int    `json:"keep_last,omitempty"`
	KeepHourly  int    `json:"keep_hourly,omitempty"`
	KeepDaily   int    `json:"keep_daily,omitempty"`
	KeepWeekly  int    `json:"keep_weekly,omitempty"`
	KeepMonthly int    `json:"keep_monthly,omitempty"`
	KeepYearly  int    `json:"keep_yearly,omitempty"`
	KeepWithin  string `json:"keep_within,omitempty"` // e.g. 14d, 2w, 36h
	DryRun      bool   `json:"dry_run,omitempty"`
}

// BackupVerify re-reads backups' data and checks it: the named backups, or
// every backup of a volume in a repository (default: the project's default).
type BackupVerify struct {
	Backups    []string `json:"backups,omitempty"`
	Volume     string   `json:"volume,omitempty"`
	Repository string   `json:"repository,omitempty"`
	// Repair rewrites each damaged chunk from a snapshot of the volume, or
	// its live disk, that still holds the same bytes (checked by hash).
	Repair bool `json:"repair,omitempty"`
}

// BackupFiles copies files out of a disk image backup (ext4 or XFS, with or
// without a partition table) into a directory on a node's host.
type BackupFiles struct {
	Include   []string `json:"include"`             // paths in the image's file system, e.g. /etc/hosts
	Target    string   `json:"target"`              // an absolute directory on the node's host
	Partition int      `json:"partition,omitempty"` // 1-based; 0: the only readable file system
	Overwrite bool     `json:"overwrite,omitempty"`
	Node      string   `json:"node,omitempty"`
}

// Repository states.
const (
	RepositoryCreating = "creating" // being initialised on its node
	RepositoryReady    = "ready"
)

// A repository whose creation fails is removed again; its task says why.

// Repository is a backup repository the server uses: a local directory on
// a node's host or an S3 bucket. Its password is random, made by the server,
// and shown only to an admin who asks (`--reveal-password`), so that
// `cairn repo` alone can always restore from it.
type Repository struct {
	ID          string    `json:"id"`
	Name        string    `json:"name"`
	Project     string    `json:"project"`
	URL         string    `json:"url"`
	Node        string    `json:"node"` // the node that reaches it (a local directory is on that node's host)
	Default     bool      `json:"default"`
	SameDisk    bool      `json:"same_disk"` // on the disk of the volumes: protects against mistakes, not against losing the disk
	State       string    `json:"state"`
	StateDetail string    `json:"state_detail,omitempty"`
	S3Region    string    `json:"s3_region,omitempty"`
	HasS3Keys   bool      `json:"has_s3_keys"` // credentials are stored (encrypted)
	CreatedAt   time.Time `json:"created_at"`
	// Password is set only for an admin who asked to see it.
	Password string `json:"password,omitempty"`
}

type RepositoryCreate struct {
	Name string `json:"name"`
	URL  string `json:"url"` // absolute directory on the node's host, or s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]
	Node string `json:"node,omitempty"`
	// Default makes it the project's default repository.
	Default bool `json:"default,omitempty"`
	// Password adopts an existing repository at URL (its password); empty
	// creates a new repository with a random password.
	Password    string `json:"password,omitempty"`
	S3AccessKey string `json:"s3_access_key,omitempty"`
	S3SecretKey string `json:"s3_secret_key,omitempty"`
	S3Region    string `json:"s3_region,omitempty"`
}

type RepositoryVerify struct {
	// ReadDataPercent re-reads that share of the packs (0: structure only).
	ReadDataPercent float64 `json:"read_data_percent,omitempty"`
}

// Schedule actions.
const (
	ScheduleSnapshot = "snapshot"
	ScheduleBackup   = "backup"
	ScheduleVerify   = "verify"
)

// Frequency is when a schedule runs: {"kind": "daily", "time": "02:30"},
// {"kind": "weekly", "weekday": "sun", "time": "03:00"}, {"kind": "monthly",
// "day": 1, "time": "04:00"} or {"kind": "cron", "expr": "*/15 * * * *"},
// in the schedule's time zone.
type Frequency struct {
	Kind    string `json:"kind"`
	Time    string `json:"time,omitempty"`
	Weekday string `json:"weekday,omitempty"`
	Day     int    `json:"day,omitempty"`
	Expr    string `json:"expr,omitempty"`
}

// Retention is a backup schedule's policy (restic's rules): a backup kept
// by any rule stays.
type Retention struct {
	KeepLast    int    `json:"keep_last,omitempty"`
	KeepHourly  int    `json:"keep_hourly,omitempty"`
	KeepDaily   int    `json:"keep_daily,omitempty"`
	KeepWeekly  int    `json:"keep_weekly,omitempty"`
	KeepMonthly int    `json:"keep_monthly,omitempty"`
	KeepYearly  int    `json:"keep_yearly,omitempty"`
	KeepWithin  string `json:"keep_within,omitempty"` // e.g. 14d
}

// Schedule snapshots, backs up or verifies volumes at a frequency, and
// keeps what its retention says of what it made (never anything else).
type Schedule struct {
	ID        string            `json:"id"`
	Name      string            `json:"name"`
	Action    string            `json:"action"`   // snapshot, backup, verify
	Volumes   []string          `json:"volumes"`  // volume ids, or
	Selector  map[string]string `json:"selector"` // every volume with these labels, at each run
	Frequency Frequency         `json:"frequency"`
	TZ        string            `json:"tz"` // IANA zone; "" is UTC
	// Keep is how many of its own snapshots a snapshot schedule keeps per
	// volume; Retention what a backup schedule keeps.
	Keep       int        `json:"keep,omitempty"`
	Retention  *Retention `json:"retention,omitempty"`
	Repository string     `json:"repository,omitempty"` // backup and verify: the repository's name
	// ReadData is the share of the repository's data a verify re-reads.
	ReadData      float64    `json:"read_data,omitempty"`
	Enabled       bool       `json:"enabled"`
	JitterSeconds int        `json:"jitter_seconds"`
	NextRun       *time.Time `json:"next_run"`  // null when disabled
	LastSlot      *time.Time `json:"last_slot"` // the last slot handled
	CreatedAt     time.Time  `json:"created_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
	// Warnings are said once, in the answer to a create or update (e.g. a
	// selector that matches no volume now).
	Warnings []string `json:"warnings,omitempty"`
}

// ScheduleCreate makes a schedule. Volumes or Selector; Keep for snapshot
// schedules, Retention for backup schedules (default keep_within 14d);
// Repository (default: the project's default) and ReadData for verify.
type ScheduleCreate struct {
	Name          string            `json:"name"`
	Action        string            `json:"action"`
	Volumes       []string          `json:"volumes,omitempty"` // names or ids
	Selector      map[string]string `json:"selector,omitempty"`
	Frequency     Frequency         `json:"frequency"`
	TZ            string            `json:"tz,omitempty"`
	Keep          int               `json:"keep,omitempty"`
	Retention     *Retention        `json:"retention,omitempty"`
	Repository    string            `json:"repository,omitempty"`
	ReadData      float64           `json:"read_data,omitempty"`
	Disabled      bool              `json:"disabled,omitempty"`
	JitterSeconds int               `json:"jitter_seconds,omitempty"`
}

// ScheduleUpdate changes the fields it sets. Sent to retention-preview,
// it changes nothing: the answer is what the new settings would remove.
type ScheduleUpdate struct {
	Name          *string           `json:"name,omitempty"`
	Volumes       []string          `json:"volumes,omitempty"`
	Selector      map[string]string `json:"selector,omitempty"`
	Frequency     *Frequency        `json:"frequency,omitempty"`
	TZ            *string           `json:"tz,omitempty"`
	Keep          *int              `json:"keep,omitempty"`
	Retention     *Retention        `json:"retention,omitempty"`
	Repository    *string           `json:"repository,omitempty"`
	ReadData      *float64          `json:"read_data,omitempty"`
	Enabled       *bool             `json:"enabled,omitempty"`
	JitterSeconds *int              `json:"jitter_seconds,omitempty"`
}

// ScheduleRun is one run of a schedule on one volume (or the repository),
// or a record of slots missed while the server was down or skipped.
type ScheduleRun struct {
	ID         string     `json:"id"`
	ScheduleID string     `json:"schedule_id"`
	Slot       *time.Time `json:"slot"`
	VolumeID   string     `json:"volume_id,omitempty"`
	TaskID     string     `json:"task_id,omitempty"`
	// State: queued (its task is queued or running), succeeded, failed, retrying (a retry is
	// due at retry_at), missed, skipped.
	State      string     `json:"state"`
	Attempt    int        `json:"attempt"`
	RetryAt    *time.Time `json:"retry_at,omitempty"`
	Message    string     `json:"message,omitempty"`
	CreatedAt  time.Time  `json:"created_at"`
	FinishedAt *time.Time `json:"finished_at"`
}

// RetentionPreview lists exactly what a schedule's retention would remove
// now: its own snapshots or backups beyond what it keeps.
type RetentionPreview struct {
	Schedule string          `json:"schedule"`
	Remove   []RetentionItem `json:"remove"`
	Keep     []RetentionItem `json:"keep"`
}

// RetentionItem is one snapshot or backup in a preview.
type RetentionItem struct {
	Kind      string    `json:"kind"` // snapshot or backup
	ID        string    `json:"id"`
	Name      string    `json:"name,omitempty"`
	VolumeID  string    `json:"volume_id"`
	Volume    string    `json:"volume"`
	CreatedAt time.Time `json:"created_at"`
}

// ScheduleNext is a schedule's next run times, in its zone.
type ScheduleNext struct {
	Schedule string   `json:"schedule"`
	TZ       string   `json:"tz"`
	Runs     []string `json:"runs"` // RFC 3339 with the zone's offset
}

// VolumeLabels sets labels (a value) or removes them (null).
type VolumeLabels struct {
	Labels map[string]*string `json:"labels"`
}
