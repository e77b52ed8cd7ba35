package client

import (
	"context"
	"net/url"
	"strconv"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

// Whoami checks the token and tells who the caller is.
func (c *Client) Whoami(ctx context.Context) (apitypes.Whoami, error) {
	var w apitypes.Whoami
	err := c.get(ctx, "/v1/whoami", nil, &w)
	return w, err
}

// Projects (admin, except GetProject of one's own).

// ListProjects returns one page of projects (admin).
func (c *Client) ListProjects(ctx context.Context, opts ListOptions) (apitypes.List[apitypes.Project], error) {
	return list[apitypes.Project](ctx, c, "/v1/projects", opts, nil)
}

// AllProjects returns every project (admin).
func (c *Client) AllProjects(ctx context.Context) ([]apitypes.Project, error) {
	return all(ctx, c.ListProjects)
}

// CreateProject makes a project (admin).
func (c *Client) CreateProject(ctx context.Context, in apitypes.ProjectCreate) (apitypes.Project, error) {
	var out apitypes.Project
	err := c.post(ctx, "/v1/projects", in, &out)
	return out, err
}

// GetProject returns a project by name or id.
func (c *Client) GetProject(ctx context.Context, project string) (apitypes.Project, error) {
	var out apitypes.Project
	err := c.get(ctx, p("/v1/projects/", project), nil, &out)
	return out, err
}

// DeleteProject deletes a project (admin).
func (c *Client) DeleteProject(ctx context.Context, project string) error {
	return c.del(ctx, p("/v1/projects/", project), nil, nil)
}

// Tokens of the acting project.

// ListTokens returns one page of the acting project's tokens.
func (c *Client) ListTokens(ctx context.Context, opts ListOptions) (apitypes.List[apitypes.Token], error) {
	return list[apitypes.Token](ctx, c, "/v1/tokens", opts, nil)
}

// AllTokens returns every token of the acting project.
func (c *Client) AllTokens(ctx context.Context) ([]apitypes.Token, error) {
	return all(ctx, c.ListTokens)
}

// CreateToken makes a token; its Secret is in this answer only.
func (c *Client) CreateToken(ctx context.Context, in apitypes.TokenCreate) (apitypes.Token, error) {
	var out apitypes.Token
	err := c.post(ctx, "/v1/tokens", in, &out)
	return out, err
}

// DeleteToken revokes a token (admin).
func (c *Client) DeleteToken(ctx context.Context, id string) error {
	return c.del(ctx, p("/v1/tokens/", id), nil, nil)
}

// Volumes. Every volume, snapshot and export argument is a name or an id.

// ListVolumes returns one page of the project's volumes.
func (c *Client) ListVolumes(ctx context.Context, opts ListOptions) (apitypes.List[apitypes.Volume], error) {
	return list[apitypes.Volume](ctx, c, "/v1/volumes", opts, nil)
}

// AllVolumes returns every volume of the project.
func (c *Client) AllVolumes(ctx context.Context) ([]apitypes.Volume, error) {
	return all(ctx, c.ListVolumes)
}

// CreateVolume makes an empty volume; the task's ResourceID is the volume.
func (c *Client) CreateVolume(ctx context.Context, in apitypes.VolumeCreate) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, "/v1/volumes", in, &out)
	return out, err
}

// ImportVolume makes a volume from a disk image at a path on the node's host.
func (c *Client) ImportVolume(ctx context.Context, in apitypes.VolumeImport) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, "/v1/volumes/import", in, &out)
	return out, err
}

// GetVolume returns a volume by name or id.
func (c *Client) GetVolume(ctx context.Context, volume string) (apitypes.Volume, error) {
	var out apitypes.Volume
	err := c.get(ctx, p("/v1/volumes/", volume), nil, &out)
	return out, err
}

// DeleteVolume deletes the live disk; with purge the snapshots go too.
func (c *Client) DeleteVolume(ctx context.Context, volume string, purge bool) (apitypes.Task, error) {
	var q url.Values
	if purge {
		q = url.Values{"purge": {"true"}}
	}
	var out apitypes.Task
	err := c.del(ctx, p("/v1/volumes/", volume), q, &out)
	return out, err
}

// GrowVolume grows a volume's virtual size.
func (c *Client) GrowVolume(ctx context.Context, volume string, in apitypes.VolumeGrow) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/volumes/", volume, "/grow"), in, &out)
	return out, err
}

// RevertVolume applies the volume's head_parent snapshot, throwing away what
// changed since.
func (c *Client) RevertVolume(ctx context.Context, volume string) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/volumes/", volume, "/revert"), struct{}{}, &out)
	return out, err
}

// Snapshots of one volume, oldest first.

// ListSnapshots returns one page of a volume's snapshots, oldest first.
func (c *Client) ListSnapshots(ctx context.Context, volume string, opts ListOptions) (apitypes.List[apitypes.Snapshot], error) {
	return list[apitypes.Snapshot](ctx, c, p("/v1/volumes/", volume, "/snapshots"), opts, nil)
}

// AllSnapshots returns every snapshot of a volume, oldest first.
func (c *Client) AllSnapshots(ctx context.Context, volume string) ([]apitypes.Snapshot, error) {
	return all(ctx, func(ctx context.Context, o ListOptions) (apitypes.List[apitypes.Snapshot], error) {
		return c.ListSnapshots(ctx, volume, o)
	})
}

// CreateSnapshot snapshots a volume; the task's ResourceID is the snapshot, under the task's VolumeID.
func (c *Client) CreateSnapshot(ctx context.Context, volume string, in apitypes.SnapshotCreate) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/volumes/", volume, "/snapshots"), in, &out)
	return out, err
}

// GetSnapshot returns a snapshot of a volume.
func (c *Client) GetSnapshot(ctx context.Context, volume, snapshot string) (apitypes.Snapshot, error) {
	var out apitypes.Snapshot
	err := c.get(ctx, p("/v1/volumes/", volume, "/snapshots/", snapshot), nil, &out)
	return out, err
}

// DeleteSnapshot deletes one snapshot, or with subtree the snapshot and all
// its descendants.
func (c *Client) DeleteSnapshot(ctx context.Context, volume, snapshot string, subtree bool) (apitypes.Task, error) {
	var q url.Values
	if subtree {
		q = url.Values{"subtree": {"true"}}
	}
	var out apitypes.Task
	err := c.del(ctx, p("/v1/volumes/", volume, "/snapshots/", snapshot), q, &out)
	return out, err
}

// ApplySnapshot makes the volume's disk the snapshot's. With SaveCurrent the
// task's Result["saved_snapshot_id"] names the snapshot of the former state.
func (c *Client) ApplySnapshot(ctx context.Context, volume, snapshot string, in apitypes.SnapshotApply) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/volumes/", volume, "/snapshots/", snapshot, "/apply"), in, &out)
	return out, err
}

// SnapshotToVolume makes a new volume from a snapshot; the task's ResourceID is
// the new volume.
func (c *Client) SnapshotToVolume(ctx context.Context, volume, snapshot string, in apitypes.SnapshotToVolume) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/volumes/", volume, "/snapshots/", snapshot, "/to-volume"), in, &out)
	return out, err
}

// Exports (NBD) of a volume or of its snapshots.

// ListExports returns one page of a volume's exports.
func (c *Client) ListExports(ctx context.Context, volume string, opts ListOptions) (apitypes.List[apitypes.Export], error) {
	return list[apitypes.Export](ctx, c, p("/v1/volumes/", volume, "/exports"), opts, nil)
}

// AllExports returns every export of a volume.
func (c *Client) AllExports(ctx context.Context, volume string) ([]apitypes.Export, error) {
	return all(ctx, func(ctx context.Context, o ListOptions) (apitypes.List[apitypes.Export], error) {
		return c.ListExports(ctx, volume, o)
	})
}

// CreateExport exports the volume, or one of its snapshots, over NBD; the task's ResourceID is the export.
func (c *Client) CreateExport(ctx context.Context, volume string, in apitypes.ExportCreate) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/volumes/", volume, "/exports"), in, &out)
	return out, err
}

// GetExport returns an export of a volume.
func (c *Client) GetExport(ctx context.Context, volume, export string) (apitypes.Export, error) {
	var out apitypes.Export
	err := c.get(ctx, p("/v1/volumes/", volume, "/exports/", export), nil, &out)
	return out, err
}

// ExportCredentials fetches a client certificate of the caller's project, its
// key and the CA certificate for a TLS export (409 no_tls for a plain one).
// Each call issues a new client certificate.
func (c *Client) ExportCredentials(ctx context.Context, volume, export string) (apitypes.ExportCredentials, error) {
	var out apitypes.ExportCredentials
	err := c.get(ctx, p("/v1/volumes/", volume, "/exports/", export, "/credentials"), nil, &out)
	return out, err
}

// DeleteExport stops an export.
func (c *Client) DeleteExport(ctx context.Context, volume, export string) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.del(ctx, p("/v1/volumes/", volume, "/exports/", export), nil, &out)
	return out, err
}

// Nodes.

// ListNodes returns one page of nodes.
func (c *Client) ListNodes(ctx context.Context, opts ListOptions) (apitypes.List[apitypes.Node], error) {
	return list[apitypes.Node](ctx, c, "/v1/nodes", opts, nil)
}

// AllNodes returns every node.
func (c *Client) AllNodes(ctx context.Context) ([]apitypes.Node, error) {
	return all(ctx, c.ListNodes)
}

// CreateNode registers a node name (admin); the node's Token is in this answer only.
func (c *Client) CreateNode(ctx context.Context, in apitypes.NodeCreate) (apitypes.Node, error) {
	var out apitypes.Node
	err := c.post(ctx, "/v1/nodes", in, &out)
	return out, err
}

// GetNode returns a node by name or id.
func (c *Client) GetNode(ctx context.Context, node string) (apitypes.Node, error) {
	var out apitypes.Node
	err := c.get(ctx, p("/v1/nodes/", node), nil, &out)
	return out, err
}

// DeleteNode removes a node (admin).
func (c *Client) DeleteNode(ctx context.Context, node string) error {
	return c.del(ctx, p("/v1/nodes/", node), nil, nil)
}

// Repositories.

// ListRepositories returns one page of the project's repositories.
func (c *Client) ListRepositories(ctx context.Context, opts ListOptions) (apitypes.List[apitypes.Repository], error) {
	return list[apitypes.Repository](ctx, c, "/v1/repositories", opts, nil)
}

// AllRepositories returns every repository of the project.
func (c *Client) AllRepositories(ctx context.Context) ([]apitypes.Repository, error) {
	return all(ctx, c.ListRepositories)
}

// CreateRepository creates (or adopts) a repository; the task's ResourceID
// is the repository.
func (c *Client) CreateRepository(ctx context.Context, in apitypes.RepositoryCreate) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, "/v1/repositories", in, &out)
	return out, err
}

// GetRepository returns a repository; revealPassword (admins only) adds its password.
func (c *Client) GetRepository(ctx context.Context, repository string, revealPassword bool) (apitypes.Repository, error) {
	var out apitypes.Repository
	var q url.Values
	if revealPassword {
		q = url.Values{"reveal_password": {"true"}}
	}
	err := c.get(ctx, p("/v1/repositories/", repository), q, &out)
	return out, err
}

// VerifyRepository queues a verify of a repository.
func (c *Client) VerifyRepository(ctx context.Context, repository string, in apitypes.RepositoryVerify) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/repositories/", repository, "/verify"), in, &out)
	return out, err
}

// PruneRepository queues a prune of a repository (or returns the one queued).
func (c *Client) PruneRepository(ctx context.Context, repository string) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/repositories/", repository, "/prune"), nil, &out)
	return out, err
}

// Backups.

// CreateBackup backs up a volume; the task's ResourceID is the backup.
func (c *Client) CreateBackup(ctx context.Context, volume string, in apitypes.BackupCreate) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/volumes/", volume, "/backups"), in, &out)
	return out, err
}

// ListBackups returns one page of the project's backups, newest first,
// optionally of one volume and in one repository.
func (c *Client) ListBackups(ctx context.Context, volume, repository string, opts ListOptions) (apitypes.List[apitypes.Backup], error) {
	q := url.Values{}
	if volume != "" {
		q.Set("volume", volume)
	}
	if repository != "" {
		q.Set("repository", repository)
	}
	return list[apitypes.Backup](ctx, c, "/v1/backups", opts, q)
}

// AllBackups returns every backup that ListBackups selects.
func (c *Client) AllBackups(ctx context.Context, volume, repository string) ([]apitypes.Backup, error) {
	return all(ctx, func(ctx context.Context, o ListOptions) (apitypes.List[apitypes.Backup], error) {
		return c.ListBackups(ctx, volume, repository, o)
	})
}

// GetBackup returns a backup by id or unique id prefix.
func (c *Client) GetBackup(ctx context.Context, backup string) (apitypes.Backup, error) {
	var out apitypes.Backup
	err := c.get(ctx, p("/v1/backups/", backup), nil, &out)
	return out, err
}

// RestoreBackup restores a backup into a new volume or a file on a node's
// host; for a volume the task's ResourceID is the new volume.
func (c *Client) RestoreBackup(ctx context.Context, backup string, in apitypes.BackupRestore) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/backups/", backup, "/restore"), in, &out)
	return out, err
}

// ForgetBackups removes the volume's backups a retention policy does not keep.
func (c *Client) ForgetBackups(ctx context.Context, volume string, in apitypes.BackupForget) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/volumes/", volume, "/backups/forget"), in, &out)
	return out, err
}

// VerifyBackups re-reads and checks backups' data.
func (c *Client) VerifyBackups(ctx context.Context, in apitypes.BackupVerify) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, "/v1/backups/verify", in, &out)
	return out, err
}

// CopyBackupFiles copies files out of a disk image backup onto a node's host.
func (c *Client) CopyBackupFiles(ctx context.Context, backup string, in apitypes.BackupFiles) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/backups/", backup, "/files"), in, &out)
	return out, err
}

// CreateBackupExport starts serving a backup over NBD; the task's
// ResourceID is the export.
func (c *Client) CreateBackupExport(ctx context.Context, backup string, in apitypes.BackupExportCreate) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.post(ctx, p("/v1/backups/", backup, "/exports"), in, &out)
	return out, err
}

// BackupExports returns every export of a backup.
func (c *Client) BackupExports(ctx context.Context, backup string) ([]apitypes.BackupExport, error) {
	return all(ctx, func(ctx context.Context, o ListOptions) (apitypes.List[apitypes.BackupExport], error) {
		return list[apitypes.BackupExport](ctx, c, p("/v1/backups/", backup, "/exports"), o, nil)
	})
}

// GetBackupExport returns an export of a backup.
func (c *Client) GetBackupExport(ctx context.Context, backup, export string) (apitypes.BackupExport, error) {
	var out apitypes.BackupExport
	err := c.get(ctx, p("/v1/backups/", backup, "/exports/", export), nil, &out)
	return out, err
}

// BackupExportCredentials issues client credentials for a TLS backup export.
func (c *Client) BackupExportCredentials(ctx context.Context, backup, export string) (apitypes.ExportCredentials, error) {
	var out apitypes.ExportCredentials
	err := c.get(ctx, p("/v1/backups/", backup, "/exports/", export, "/credentials"), nil, &out)
	return out, err
}

// DeleteBackupExport stops a backup export.
func (c *Client) DeleteBackupExport(ctx context.Context, backup, export string) (apitypes.Task, error) {
	var out apitypes.Task
	err := c.del(ctx, p("/v1/backups/", backup, "/exports/", export), nil, &out)
	return out, err
}

// Schedules. Every schedule argument is a name or an id.

// ListSchedules returns one page of the project's schedules, by name.
func (c *Client) ListSchedules(ctx context.Context, opts ListOptions) (apitypes.List[apitypes.Schedule], error) {
	return list[apitypes.Schedule](ctx, c, "/v1/schedules", opts, nil)
}

// AllSchedules returns every schedule of the project.
func (c *Client) AllSchedules(ctx context.Context) ([]apitypes.Schedule, error) {
	return all(ctx, c.ListSchedules)
}

// CreateSchedule makes a schedule; the answer's Warnings say what looks
// wrong but was accepted (a selector that matches no volume now).
func (c *Client) CreateSchedule(ctx context.Context, in apitypes.ScheduleCreate) (apitypes.Schedule, error) {
	var out apitypes.Schedule
	err := c.post(ctx, "/v1/schedules", in, &out)
	return out, err
}

// GetSchedule returns a schedule.
func (c *Client) GetSchedule(ctx context.Context, schedule string) (apitypes.Schedule, error) {
	var out apitypes.Schedule
	err := c.get(ctx, p("/v1/schedules/", schedule), nil, &out)
	return out, err
}

// UpdateSchedule changes the fields that in sets and returns the schedule.
func (c *Client) UpdateSchedule(ctx context.Context, schedule string, in apitypes.ScheduleUpdate) (apitypes.Schedule, error) {
	var out apitypes.Schedule
	err := c.patch(ctx, p("/v1/schedules/", schedule), in, &out)
	return out, err
}

// DeleteSchedule removes a schedule and its history; what it made stays.
func (c *Client) DeleteSchedule(ctx context.Context, schedule string) error {
	return c.del(ctx, p("/v1/schedules/", schedule), nil, nil)
}

// RunSchedule runs a schedule once now, outside its slots, and returns the
// runs it started (never nil); their tasks are not waited for.
func (c *Client) RunSchedule(ctx context.Context, schedule string) ([]apitypes.ScheduleRun, error) {
	var out apitypes.List[apitypes.ScheduleRun]
	if err := c.post(ctx, p("/v1/schedules/", schedule, "/run"), nil, &out); err != nil {
		return nil, err
	}
	if out.Items == nil {
		out.Items = []apitypes.ScheduleRun{}
	}
	return out.Items, nil
}

// NextRuns returns a schedule's next count run times (count 0: the server's
// default, 5).
func (c *Client) NextRuns(ctx context.Context, schedule string, count int) (apitypes.ScheduleNext, error) {
	var q url.Values
	if count > 0 {
		q = url.Values{"count": {strconv.Itoa(count)}}
	}
	var out apitypes.ScheduleNext
	err := c.get(ctx, p("/v1/schedules/", schedule, "/next"), q, &out)
	return out, err
}

// ListScheduleHistory returns one page of a schedule's runs, newest first.
func (c *Client) ListScheduleHistory(ctx context.Context, schedule string, opts ListOptions) (apitypes.List[apitypes.ScheduleRun], error) {
	return list[apitypes.ScheduleRun](ctx, c, p("/v1/schedules/", schedule, "/history"), opts, nil)
}

// ScheduleHistory returns every run of a schedule, newest first.
func (c *Client) ScheduleHistory(ctx context.Context, schedule string) ([]apitypes.ScheduleRun, error) {
	return all(ctx, func(ctx context.Context, o ListOptions) (apitypes.List[apitypes.ScheduleRun], error) {
		return c.ListScheduleHistory(ctx, schedule, o)
	})
}

// RetentionPreview lists what the schedule's retention would remove now,
// with the changes in changes applied first (nil: the schedule as it is).
// Nothing is stored.
func (c *Client) RetentionPreview(ctx context.Context, schedule string, changes *apitypes.ScheduleUpdate) (apitypes.RetentionPreview, error) {
	var body any
	if changes != nil {
		body = changes
	}
	var out apitypes.RetentionPreview
	err := c.post(ctx, p("/v1/schedules/", schedule, "/retention-preview"), body, &out)
	return out, err
}

// LabelVolume sets labels of a volume (a value) or removes them (nil), and
// returns the volume.
func (c *Client) LabelVolume(ctx context.Context, volume string, in apitypes.VolumeLabels) (apitypes.Volume, error) {
	var out apitypes.Volume
	err := c.patch(ctx, p("/v1/volumes/", volume, "/labels"), in, &out)
	return out, err
}
