// Package qemu drives QEMU's own tools as child processes (no cgo): qemu-img
// for offline image work, qemu-storage-daemon for a volume exported over NBD
// with snapshots taken through QMP, and qemu-nbd for serving one internal
// snapshot read-only.
//
// Contracts shared by the package:
//   - Every call that runs a tool takes ctx first; cancelling ctx kills the
//     tool. Nothing here retries a failed tool run: the caller (the node, which
//     reports to the server) decides. The one exception is binding a helper's
//     fixed port, retried briefly because a helper being restarted may still
//     hold it (see StartStorageDaemon).
//   - Errors carry the tool's own message (see ToolError), so a full disk or a
//     corrupt image reads as QEMU reported it; a message that says the image is
//     corrupt also carries core.KindCorrupt.
//   - Images are qcow2 with 64 KiB clusters. The functions on a path do not
//     lock anything themselves: QEMU's image locking refuses a second writer,
//     and the caller makes sure that one image has one writer (the node runs
//     one task per volume at a time).
//   - Every child dies with the node (parent death signal), and long-lived
//     helpers leave a pidfile so that ReapLeftovers can clean up after a crash.
package qemu

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/core"
)

// ClusterSize is the qcow2 cluster size of every image cairn creates.
const ClusterSize = 65536

// ImageInfo is what qemu-img info reports about an image.
type ImageInfo struct {
	Format      string
	VirtualSize int64 // bytes the guest sees
	ActualSize  int64 // bytes allocated on the host file system
	ClusterSize int64
	Snapshots   []SnapshotInfo
	// Corrupt is qcow2's corrupt flag: QEMU found an inconsistency and will
	// open the image read-only only until `qemu-img check -r` repairs it.
	Corrupt bool
}

// SnapshotInfo is one internal snapshot of an image.
type SnapshotInfo struct {
	ID          string // qcow2's own numeric id, assigned by QEMU
	Tag         string // the name given at creation (QEMU calls it "name")
	VMStateSize int64
	Date        time.Time
	// VirtualSize is the disk size the snapshot recorded. qemu-img 7.2's JSON
	// does not report it; Info reads it from the qcow2 snapshot table and
	// leaves 0 when it cannot.
	VirtualSize int64
}

// Snapshot returns the snapshot with the given tag, or nil.
func (i *ImageInfo) Snapshot(tag string) *SnapshotInfo {
	for k := range i.Snapshots {
		if i.Snapshots[k].Tag == tag {
			return &i.Snapshots[k]
		}
	}
	return nil
}

type imgInfoJSON struct {
	Format         string `json:"format"`
	VirtualSize    int64  `json:"virtual-size"`
	ActualSize     int64  `json:"actual-size"`
	ClusterSize    int64  `json:"cluster-size"`
	FormatSpecific struct {
		Type string `json:"type"`
		Data struct {
			Corrupt bool `json:"corrupt"`
		} `json:"data"`
	} `json:"format-specific"`
	Snapshots []struct {
		ID          string `json:"id"`
		Name        string `json:"name"`
		VMStateSize int64  `json:"vm-state-size"`
		DateSec     int64  `json:"date-sec"`
		DateNsec    int64  `json:"date-nsec"`
	} `json:"snapshots"`
}

// Info describes the image at path. With shared, the image may be held by
// another QEMU process (qemu-img -U, force share): what it reads of the live
// layer may then be stale, snapshots are final.
func Info(ctx context.Context, path string, shared bool) (*ImageInfo, error) {
	args := []string{"info", "--output=json"}
	if shared {
		args = append(args, "-U")
	}
	args = append(args, "--", path)
	out, _, err := runTool(ctx, "qemu-img info", nil, "qemu-img", args...)
	if err != nil {
		return nil, err
	}
	var raw imgInfoJSON
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("qemu-img info %s: decoding its output: %w", path, err)
	}
	info := &ImageInfo{
		Format:      raw.Format,
		VirtualSize: raw.VirtualSize,
		ActualSize:  raw.ActualSize,
		ClusterSize: raw.ClusterSize,
		Corrupt:     raw.FormatSpecific.Data.Corrupt,
	}
	var diskSizes map[string]int64
	if raw.Format == "qcow2" && len(raw.Snapshots) > 0 {
		diskSizes, _ = snapshotDiskSizes(path) // best effort: 0 when unknown
	}
	for _, s := range raw.Snapshots {
		info.Snapshots = append(info.Snapshots, SnapshotInfo{
			ID:          s.ID,
			Tag:         s.Name,
			VMStateSize: s.VMStateSize,
			Date:        time.Unix(s.DateSec, s.DateNsec).UTC(),
			VirtualSize: diskSizes[s.ID],
		})
	}
	return info, nil
}

// Create makes a new empty qcow2 image of size bytes with 64 KiB clusters.
// It refuses (core.Conflict, code "exists") a path that already exists, and
// the check is atomic: the file is created with O_EXCL before qemu-img
// formats it. On failure nothing is left at path.
func Create(ctx context.Context, path string, size int64) error {
	if size <= 0 {
		return core.Invalid("image size must be positive, got %d", size)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return core.Conflict("exists", "image %s already exists", path)
	}
	if err != nil {
		return fmt.Errorf("creating image: %w", err)
	}
	_ = f.Close()
	_, _, err = runTool(ctx, "qemu-img create", nil, "qemu-img", "create", "-q", "-f", "qcow2",
		"-o", "cluster_size="+strconv.Itoa(ClusterSize), "--", path, strconv.FormatInt(size, 10))
	if err != nil {
		_ = os.Remove(path)
		return err
	}
	return nil
}

// checkTag refuses tags qemu-img could misread. qemu-img snapshot -a looks a
// snapshot up by id OR name, and ids are small decimal numbers, so a tag made
// of digits could select another snapshot. cairn's tags are UUIDs (and the
// reserved system-tag form), never all digits.
func checkTag(tag string) error {
	if tag == "" {
		return core.Invalid("empty snapshot tag")
	}
	if strings.Trim(tag, "0123456789") == "" {
		return core.Invalid("snapshot tag %q is all digits and could be read as a qcow2 snapshot id", tag)
	}
	return nil
}

// SnapshotCreate takes an internal snapshot named tag of an image no other
// process holds (qemu-img snapshot -c). QEMU allows two snapshots with the
// same name; callers use fresh tags.
func SnapshotCreate(ctx context.Context, path, tag string) error {
	if err := checkTag(tag); err != nil {
		return err
	}
	_, _, err := runTool(ctx, "qemu-img snapshot -c", nil, "qemu-img", "snapshot", "--image-opts", "-c", tag, "--", qcow2Opts(path))
	return err
}

// SnapshotApply reverts the image's active layer to the snapshot tag
// (qemu-img snapshot -a). The image must not be held by another process.
func SnapshotApply(ctx context.Context, path, tag string) error {
	if err := checkTag(tag); err != nil {
		return err
	}
	_, _, err := runTool(ctx, "qemu-img snapshot -a", nil, "qemu-img", "snapshot", "--image-opts", "-a", tag, "--", qcow2Opts(path))
	return err
}

// SnapshotDelete deletes the snapshot tag (qemu-img snapshot -d). A missing
// tag is an error of core.KindNotFound (qemu-img's "snapshot not found"), which
// callers that retry a delete treat as done.
func SnapshotDelete(ctx context.Context, path, tag string) error {
	if err := checkTag(tag); err != nil {
		return err
	}
	_, _, err := runTool(ctx, "qemu-img snapshot -d", nil, "qemu-img", "snapshot", "--image-opts", "-d", tag, "--", qcow2Opts(path))
	var te *ToolError
	if errors.As(err, &te) && strings.Contains(te.Stderr, "snapshot not found") {
		return &core.Error{Kind: core.KindNotFound, Code: "not_found", Err: err}
	}
	return err
}

// Resize grows the image to size bytes. Shrinking is refused (core.Invalid):
// it would cut data off, and qcow2 cannot shrink an image with snapshots. The
// same size is a no-op.
func Resize(ctx context.Context, path string, size int64) error {
	info, err := Info(ctx, path, false)
	if err != nil {
		return err
	}
	if size < info.VirtualSize {
		return core.Invalid("cannot shrink %s from %d to %d bytes: volumes only grow", path, info.VirtualSize, size)
	}
	if size == info.VirtualSize {
		return nil
	}
	_, _, err = runTool(ctx, "qemu-img resize", nil, "qemu-img", "resize", "-q", "-f", info.Format, "--", path, strconv.FormatInt(size, 10))
	return err
}

// CheckResult is what qemu-img check found.
type CheckResult struct {
	Corruptions       int
	Leaks             int
	CheckErrors       int // errors that prevented checking some of the image
	ImageEndOffset    int64
	TotalClusters     int64
	AllocatedClusters int64
	// Messages are qemu-img's own lines about each finding ("ERROR cluster
	// 3 refcount=0 reference=1").
	Messages []string
}

// Clean reports whether the check found nothing wrong.
func (r *CheckResult) Clean() bool {
	return r.Corruptions == 0 && r.Leaks == 0 && r.CheckErrors == 0
}

// Check runs qemu-img check (read-only, no repair). Findings are not an error:
// they are in the result. An error means the check could not run at all.
func Check(ctx context.Context, path string, shared bool) (*CheckResult, error) {
	args := []string{"check", "-f", "qcow2", "--output=json"}
	if shared {
		args = append(args, "-U")
	}
	args = append(args, "--", path)
	// Exit 2: corruptions found; 3: leaks found. Both still print the JSON.
	var stderr strings.Builder
	out, _, err := runToolStderr(ctx, "qemu-img check", []int{2, 3}, &stderr, "qemu-img", args...)
	if err != nil {
		return nil, err
	}
	var raw struct {
		Corruptions       int   `json:"corruptions"`
		Leaks             int   `json:"leaks"`
		CheckErrors       int   `json:"check-errors"`
		ImageEndOffset    int64 `json:"image-end-offset"`
		TotalClusters     int64 `json:"total-clusters"`
		AllocatedClusters int64 `json:"allocated-clusters"`
	}
	if err := json.Unmarshal(out, &raw); err != nil {
		return nil, fmt.Errorf("qemu-img check %s: decoding its output: %w", path, err)
	}
	res := &CheckResult{
		Corruptions:       raw.Corruptions,
		Leaks:             raw.Leaks,
		CheckErrors:       raw.CheckErrors,
		ImageEndOffset:    raw.ImageEndOffset,
		TotalClusters:     raw.TotalClusters,
		AllocatedClusters: raw.AllocatedClusters,
	}
	if msg := cleanStderr("qemu-img", []byte(stderr.String())); msg != "" {
		res.Messages = strings.Split(msg, "\n")
	}
	return res, nil
}

// classify gives a tool error the core kind its message implies.
func classify(err *ToolError) error {
	s := strings.ToLower(err.Stderr)
	if strings.Contains(s, "corrupt") {
		return &core.Error{Kind: core.KindCorrupt, Code: "corrupt", Err: err}
	}
	return err
}

// RepairLeaks frees clusters that a killed writer allocated but never
// referenced (`qemu-img check -r leaks`): safe, it changes no data. The image
// must not be open elsewhere. It returns how many leaks it found.
func RepairLeaks(ctx context.Context, path string) (int, error) {
	r, err := Check(ctx, path, false)
	if err != nil || r.Leaks == 0 {
		return 0, err
	}
	_, _, err = runTool(ctx, "qemu-img check -r leaks", []int{2, 3}, "qemu-img", "check", "-q", "-f", "qcow2", "-r", "leaks", "--", path)
	return r.Leaks, err
}

// qcow2Opts names a qcow2 file for --image-opts, so that qemu-img never
// probes the format (a damaged header must not make it read the file as raw).
func qcow2Opts(path string) string {
	return "driver=qcow2,file.driver=file,file.filename=" + escapeOpt(path)
}
