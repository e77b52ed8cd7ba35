package apitypes

// The node API: what a `cairn node` worker and the server say to each other.
// A node token reaches only these endpoints and only its own tasks.

type NodeRegister struct {
	Address   string `json:"address"`
	Capacity  int64  `json:"capacity"`
	Available int64  `json:"available"`
}

type NodeHeartbeat = NodeRegister

// NodeClaim asks for the next runnable task, waiting up to WaitMS.
type NodeClaim struct {
	WaitMS int `json:"wait_ms"`
}

// Operation kinds a node performs.
const (
	OpVolumeCreate   = "volume.create"
	OpVolumeImport   = "volume.import"
	OpVolumeGrow     = "volume.grow"
	OpVolumeDelete   = "volume.delete"
	OpSnapshotCreate = "snapshot.create"
	OpSnapshotDelete = "snapshot.delete"
	OpSnapshotApply  = "snapshot.apply"
	OpSnapshotToVol  = "snapshot.to-volume"
	OpExportCreate   = "export.create"
	OpExportDelete   = "export.delete"

	OpRepositoryInit   = "repository.init"
	OpRepositoryVerify = "repository.verify"
	OpRepositoryPrune  = "repository.prune"

	OpBackupCreate  = "backup.create"
	OpBackupRestore = "backup.restore"
	OpBackupForget  = "backup.forget"
	OpBackupVerify  = "backup.verify"
	OpBackupFiles   = "backup.files"
	// OpBackupExport starts serving a backup read-only over NBD (Plan.Export
	// names it, Plan.Backup the backup); OpBackupUnexport stops it.
	OpBackupExport   = "backup.export"
	OpBackupUnexport = "backup.unexport"
)

// NodeTask is a claimed task with the plan the server computed for it at claim
// time from the current metadata. The node carries out exactly the plan.
type NodeTask struct {
	Task Task `json:"task"`
	Plan Plan `json:"plan"`
}

// Plan is what the node must do. Fields not used by an operation are empty.
type Plan struct {
	Op       string `json:"op"`
	VolumeID string `json:"volume_id,omitempty"` // absent for repository operations
	Size     int64  `json:"size,omitempty"`
	// Tag is the qcow2 snapshot tag to create or apply.
	Tag string `json:"tag,omitempty"`
	// SaveTag, when set on an apply, is created first (save_current).
	SaveTag string `json:"save_tag,omitempty"`
	// DeleteTags lists the qcow2 tags to delete, children before parents.
	DeleteTags []string `json:"delete_tags,omitempty"`
	// Source is a host path to import from; Format its format or "".
	Source string `json:"source,omitempty"`
	Format string `json:"format,omitempty"`
	// TargetVolumeID is the new volume of a to-volume.
	TargetVolumeID string `json:"target_volume_id,omitempty"`
	// Purge removes the file even when snapshots remain (volume.delete).
	Purge bool `json:"purge,omitempty"`
	// KeepFile keeps the qcow2 file because snapshots remain (volume.delete).
	KeepFile bool `json:"keep_file,omitempty"`
	// Export describes the export to start or stop.
	Export *NodeExport `json:"export,omitempty"`
	// Exports lists the volume's live exports, which the node stops and
	// restarts around an offline operation such as apply.
	Exports []NodeExport `json:"exports,omitempty"`
	// Sidecar is the volume's sidecar to write when the operation succeeds,
	// as it will be after the server commits.
	Sidecar *Sidecar `json:"sidecar,omitempty"`
	// TargetSidecar is the sidecar of the new volume of a to-volume.
	TargetSidecar *Sidecar `json:"target_sidecar,omitempty"`
	// Repository is the repository a repository or backup operation uses.
	Repository *NodeRepository `json:"repository,omitempty"`
	// Backup describes the backup to make (backup.create); Tag is then the
	// system snapshot to take and read. On backup.restore it names the
	// backup to restore, into the volume VolumeID or the file ToFile.
	Backup *NodeBackup `json:"backup,omitempty"`
	// ToFile is the host path a backup.restore writes (.qcow2 or raw).
	ToFile string `json:"to_file,omitempty"`
	// Forget lists the backups a backup.forget removes from the
	// repository (backup.verify: the backups to check); DryRun only
	// measures what that would free.
	Forget []string `json:"forget,omitempty"`
	DryRun bool     `json:"dry_run,omitempty"`
	// Repair, on a backup.verify, rewrites damaged data from the volume's
	// snapshots or live disk where they hold the same bytes.
	Repair bool `json:"repair,omitempty"`
	// Files copies files out of the backup (backup.files).
	Files *BackupFiles `json:"files,omitempty"`
}

// NodeBackup is a volume backup as the node makes it.
type NodeBackup struct {
	ID   string   `json:"id"` // the manifest id to write
	Tags []string `json:"tags"`
	// BaseID and BaseTag name the previous backup of the volume in the
	// repository and the system snapshot it was read from: only clusters
	// changed since are read. Empty: a full read.
	BaseID  string `json:"base_id,omitempty"`
	BaseTag string `json:"base_tag,omitempty"`
	// KeepTags are the system snapshots of the volume that are bases of
	// backups in other repositories; any other system snapshot left in the
	// file (by a backup killed midway) is removed after the backup.
	KeepTags []string `json:"keep_tags,omitempty"`
}

// NodeRepository is what a node needs to open a repository.
type NodeRepository struct {
	ID       string `json:"id"`
	URL      string `json:"url"`
	Password string `json:"password"`
	// Adopt opens an existing repository at URL instead of creating one
	// (repository.init).
	Adopt       bool    `json:"adopt,omitempty"`
	S3AccessKey string  `json:"s3_access_key,omitempty"`
	S3SecretKey string  `json:"s3_secret_key,omitempty"`
	S3Region    string  `json:"s3_region,omitempty"`
	ReadData    float64 `json:"read_data_percent,omitempty"` // repository.verify
}

// NodeExport is an export as the node runs it.
type NodeExport struct {
	ID       string `json:"id"`
	VolumeID string `json:"volume_id"`
	Tag      string `json:"tag,omitempty"` // snapshot tag, empty for the live volume
	Writable bool   `json:"writable"`
	Name     string `json:"name"` // NBD export name (random)
	Port     int    `json:"port"` // 0 = choose
	Address  string `json:"address"`
	// TLS, when set, makes the export require TLS; nil serves plain NBD.
	TLS *NodeExportTLS `json:"tls,omitempty"`
}

// NodeExportTLS is the TLS material of an export, PEM-encoded: the CA that
// client certificates must chain to, the export's server certificate and
// key, and the distinguished name of the only client identity admitted.
type NodeExportTLS struct {
	CACert         string `json:"ca_cert"`
	ServerCert     string `json:"server_cert"`
	ServerKey      string `json:"server_key"`
	ClientIdentity string `json:"client_identity"`
}

// NodeProgress reports progress and log lines of a running task.
type NodeProgress struct {
	BytesDone  int64    `json:"bytes_done"`
	BytesTotal int64    `json:"bytes_total"`
	Log        []string `json:"log,omitempty"`
}

// NodeComplete ends a task. Error empty means success.
type NodeComplete struct {
	Error     string `json:"error,omitempty"`
	ErrorCode string `json:"error_code,omitempty"`
	// Facts the node measured, e.g. the new allocation or the export's port.
	Allocated int64 `json:"allocated,omitempty"`
	Size      int64 `json:"size,omitempty"`
	Port      int   `json:"port,omitempty"`
	// SnapshotSizes maps created tags to the virtual size they recorded.
	SnapshotSizes map[string]int64 `json:"snapshot_sizes,omitempty"`
	// SnapshotUnique maps every tag of the volume to the bytes deleting
	// that snapshot would free.
	SnapshotUnique map[string]int64 `json:"snapshot_unique_bytes,omitempty"`
	// Result is merged into the task's result (e.g. what a verify found).
	Result map[string]string `json:"result,omitempty"`
}

// NodeCancelCheck answers whether the server asked to cancel a running task.
type NodeCancelCheck struct {
	Cancel bool `json:"cancel"`
}

// Sidecar is the small JSON file kept beside each volume's qcow2 file, from
// which `cairn server --rebuild-metadata` recreates the metadata.
type Sidecar struct {
	Version      int               `json:"version"`
	ID           string            `json:"id"`
	Project      string            `json:"project"`
	Name         string            `json:"name"`
	Kind         string            `json:"kind"`
	State        string            `json:"state"`
	Size         int64             `json:"size"`
	HeadParentID *string           `json:"head_parent_id"`
	Labels       map[string]string `json:"labels,omitempty"`
	CreatedAt    string            `json:"created_at"`
	Snapshots    []SidecarSnapshot `json:"snapshots"`
}

type SidecarSnapshot struct {
	ID          string  `json:"id"`
	Tag         string  `json:"tag"`
	Name        string  `json:"name"`
	Description string  `json:"description,omitempty"`
	ParentID    *string `json:"parent_id"`
	Kind        string  `json:"kind"` // user or system
	Size        int64   `json:"size"`
	CreatedAt   string  `json:"created_at"`
}

// NodeInventory is what a node reports at start: every volume file it holds
// and the qcow2 snapshot tags inside.
type NodeInventory struct {
	Volumes []InventoryVolume `json:"volumes"`
}

type InventoryVolume struct {
	ID        string              `json:"id"`
	Present   bool                `json:"present"`
	Error     string              `json:"error,omitempty"` // unreadable file
	Size      int64               `json:"size"`
	Allocated int64               `json:"allocated"`
	Snapshots []InventorySnapshot `json:"snapshots"`
}

type InventorySnapshot struct {
	Tag       string `json:"tag"`
	Size      int64  `json:"size"`
	CreatedAt string `json:"created_at"`
}

// NodeVolumes answers a node's request for the volumes and exports it must hold.
type NodeVolumes struct {
	Volumes []NodeVolume `json:"volumes"`
	// BackupExports are the plans of the backup exports the node must serve
	// again (OpBackupExport), on their recorded ports and names.
	BackupExports []Plan `json:"backup_exports,omitempty"`
}

type NodeVolume struct {
	ID      string       `json:"id"`
	State   string       `json:"state"`
	Sidecar Sidecar      `json:"sidecar"`
	Exports []NodeExport `json:"exports"`
}
