package node

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/qemu"
	"github.com/cairn-backup/cairn/internal/testenv"
)

const mib = int64(1) << 20

func tagsOf(t *testing.T, path string) []string {
	t.Helper()
	info, err := qemu.Info(t.Context(), path, true)
	if err != nil {
		t.Fatal(err)
	}
	var tags []string
	for _, s := range info.Snapshots {
		tags = append(tags, s.Tag)
	}
	return tags
}

func TestVolumeAndSnapshotLifecycle(t *testing.T) {
	requireQEMU(t)
	n := startNode(t, newFakeServer(), shortTempDir(t))
	vol := newID()
	img := n.volume(vol)

	res := n.mustDo(apitypes.Plan{Op: apitypes.OpVolumeCreate, VolumeID: vol, Size: 16 * mib, Sidecar: sidecarFor(vol, "disk")})
	if res.Size != 16*mib || res.Allocated <= 0 {
		t.Fatalf("create reported %+v", res)
	}
	if sc := n.sidecar(vol); sc.ID != vol || sc.Name != "disk" || sc.Size != 16*mib {
		t.Fatalf("sidecar after create: %+v", sc)
	}
	// A retried create (crash after the disk change) succeeds.
	n.mustDo(apitypes.Plan{Op: apitypes.OpVolumeCreate, VolumeID: vol, Size: 16 * mib})

	qemuIO(t, "-f", "qcow2", "-c", "write -P 0xAB 0 1M", img)
	tagA, tagB := newID(), newID()
	res = n.mustDo(apitypes.Plan{Op: apitypes.OpSnapshotCreate, VolumeID: vol, Tag: tagA, Sidecar: sidecarFor(vol, "disk", tagA)})
	if res.SnapshotSizes[tagA] != 16*mib {
		t.Fatalf("snapshot sizes %v", res.SnapshotSizes)
	}
	if sc := n.sidecar(vol); len(sc.Snapshots) != 1 || sc.Snapshots[0].Tag != tagA {
		t.Fatalf("sidecar after snapshot: %+v", sc)
	}
	// Retried: the tag exists, nothing new is made.
	n.mustDo(apitypes.Plan{Op: apitypes.OpSnapshotCreate, VolumeID: vol, Tag: tagA})
	if tags := tagsOf(t, img); len(tags) != 1 {
		t.Fatalf("tags after a retried create: %v", tags)
	}

	qemuIO(t, "-f", "qcow2", "-c", "write -P 0xCD 0 1M", img)
	res = n.mustDo(apitypes.Plan{Op: apitypes.OpVolumeGrow, VolumeID: vol, Size: 32 * mib})
	if res.Size != 32*mib {
		t.Fatalf("grow reported %+v", res)
	}
	res = n.do(apitypes.Plan{Op: apitypes.OpVolumeGrow, VolumeID: vol, Size: 8 * mib})
	if res.ErrorCode != "invalid" || !strings.Contains(res.Error, "shrink") {
		t.Fatalf("shrink: %+v", res)
	}

	res = n.mustDo(apitypes.Plan{Op: apitypes.OpSnapshotApply, VolumeID: vol, Tag: tagA, SaveTag: tagB, Sidecar: sidecarFor(vol, "disk", tagA, tagB)})
	if res.Size != 16*mib || res.SnapshotSizes[tagB] != 32*mib {
		t.Fatalf("apply reported %+v", res)
	}
	if !patternMatches(t, "-r", "-f", "qcow2", "-c", "read -P 0xAB 0 1M", img) {
		t.Fatal("apply did not restore the snapshot")
	}
	if sc := n.sidecar(vol); sc.Size != 16*mib || len(sc.Snapshots) != 2 {
		t.Fatalf("sidecar after apply: %+v", sc)
	}

	res = n.do(apitypes.Plan{Op: apitypes.OpSnapshotApply, VolumeID: vol, Tag: newID()})
	if res.ErrorCode != "not_found" {
		t.Fatalf("apply of a missing tag: %+v", res)
	}

	// Children first; a tag already gone is fine (a retried delete).
	n.mustDo(apitypes.Plan{Op: apitypes.OpSnapshotDelete, VolumeID: vol, DeleteTags: []string{tagB, newID(), tagA}, Sidecar: sidecarFor(vol, "disk")})
	if tags := tagsOf(t, img); len(tags) != 0 {
		t.Fatalf("tags after delete: %v", tags)
	}

	n.mustDo(apitypes.Plan{Op: apitypes.OpVolumeDelete, VolumeID: vol})
	for _, f := range []string{img, filepath.Join(n.data, "volumes", vol+".json")} {
		if _, err := os.Stat(f); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s left after delete", f)
		}
	}
	// Deleting again is a success.
	n.mustDo(apitypes.Plan{Op: apitypes.OpVolumeDelete, VolumeID: vol})

	res = n.do(apitypes.Plan{Op: apitypes.OpVolumeImport, VolumeID: newID(), Source: "nbd://127.0.0.1:1/x"})
	if res.ErrorCode != "invalid" {
		t.Fatalf("import from a pseudo-protocol: %+v", res)
	}
	res = n.do(apitypes.Plan{Op: apitypes.OpVolumeCreate, VolumeID: "../x", Size: mib})
	if res.ErrorCode != "invalid" {
		t.Fatalf("create with a path as id: %+v", res)
	}
	// Heartbeats flow (every 100 ms in tests) with the data directory's space.
	deadline := time.Now().Add(5 * time.Second)
	for {
		n.srv.mu.Lock()
		beats := n.srv.heartbeats
		n.srv.mu.Unlock()
		if beats > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no heartbeat")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestDeleteKeepingTheFile(t *testing.T) {
	requireQEMU(t)
	n := startNode(t, newFakeServer(), shortTempDir(t))
	vol, tag := newID(), newID()
	n.mustDo(apitypes.Plan{Op: apitypes.OpVolumeCreate, VolumeID: vol, Size: 8 * mib})
	n.mustDo(apitypes.Plan{Op: apitypes.OpSnapshotCreate, VolumeID: vol, Tag: tag})
	sc := sidecarFor(vol, "disk", tag)
	sc.State = "deleted"
	n.mustDo(apitypes.Plan{Op: apitypes.OpVolumeDelete, VolumeID: vol, KeepFile: true, Sidecar: sc})
	if tags := tagsOf(t, n.volume(vol)); len(tags) != 1 || tags[0] != tag {
		t.Fatalf("kept file's tags: %v", tags)
	}
	if got := n.sidecar(vol); got.State != "deleted" {
		t.Fatalf("sidecar state %q", got.State)
	}
}

// TestExports covers live and snapshot exports and the operations that go
// through a daemon holding the volume.
func TestExports(t *testing.T) {
	requireQEMU(t)
	n := startNode(t, newFakeServer(), shortTempDir(t))
	vol, tagA, tagB := newID(), newID(), newID()
	n.mustDo(apitypes.Plan{Op: apitypes.OpVolumeCreate, VolumeID: vol, Size: 16 * mib})
	qemuIO(t, "-f", "qcow2", "-c", "write -P 0xAB 0 1M", n.volume(vol))
	n.mustDo(apitypes.Plan{Op: apitypes.OpSnapshotCreate, VolumeID: vol, Tag: tagA})

	live := apitypes.NodeExport{ID: newID(), VolumeID: vol, Writable: true, Name: "live-" + newID()}
	res := n.mustDo(apitypes.Plan{Op: apitypes.OpExportCreate, VolumeID: vol, Export: &live})
	if res.Port == 0 {
		t.Fatal("no port reported")
	}
	live.Port = res.Port
	liveURI := nbdURI(live.Port, live.Name)
	qemuIO(t, "-f", "raw", "-c", "write -P 0xCD 0 1M", liveURI)
	// Retried: same port.
	if res := n.mustDo(apitypes.Plan{Op: apitypes.OpExportCreate, VolumeID: vol, Export: &live}); res.Port != live.Port {
		t.Fatalf("retried export on %d, first on %d", res.Port, live.Port)
	}

	// Snapshot through QMP while the daemon holds the volume.
	res = n.mustDo(apitypes.Plan{Op: apitypes.OpSnapshotCreate, VolumeID: vol, Tag: tagB})
	if res.SnapshotSizes[tagB] != 16*mib {
		t.Fatalf("snapshot sizes %v", res.SnapshotSizes)
	}
	qemuIO(t, "-f", "raw", "-c", "write -P 0xEE 0 1M", liveURI)

	snapExp := apitypes.NodeExport{ID: newID(), VolumeID: vol, Tag: tagA, Name: "snap-" + newID()}
	res = n.mustDo(apitypes.Plan{Op: apitypes.OpExportCreate, VolumeID: vol, Export: &snapExp})
	snapURI := nbdURI(res.Port, snapExp.Name)
	if !patternMatches(t, "-r", "-f", "raw", "-c", "read -P 0xAB 0 1M", snapURI) {
		t.Fatal("the snapshot export does not serve the snapshot")
	}
	if out, err := exec.Command("nbdinfo", snapURI).CombinedOutput(); err != nil || !strings.Contains(string(out), "is_read_only: true") {
		t.Fatalf("nbdinfo: %v\n%s", err, out)
	}
	res = n.do(apitypes.Plan{Op: apitypes.OpSnapshotDelete, VolumeID: vol, DeleteTags: []string{tagA}})
	if res.ErrorCode != "exported" {
		t.Fatalf("deleting an exported snapshot: %+v", res)
	}

	// Grow while exported: the export comes back with the new size.
	n.mustDo(apitypes.Plan{Op: apitypes.OpVolumeGrow, VolumeID: vol, Size: 24 * mib})
	if got := nbdSize(t, liveURI); got != 24*mib {
		t.Fatalf("live export size %d after grow", got)
	}

	// To-volume from a snapshot while the daemon holds the source.
	target := newID()
	res = n.mustDo(apitypes.Plan{Op: apitypes.OpSnapshotToVol, VolumeID: vol, Tag: tagB, TargetVolumeID: target, TargetSidecar: sidecarFor(target, "copy")})
	if res.Size != 16*mib {
		t.Fatalf("to-volume size %d, want the snapshot's", res.Size)
	}
	if !patternMatches(t, "-r", "-f", "qcow2", "-c", "read -P 0xCD 0 1M", n.volume(target)) {
		t.Fatal("to-volume copied the wrong bytes")
	}
	if sc := n.sidecar(target); sc.Name != "copy" || sc.Size != 16*mib {
		t.Fatalf("target sidecar %+v", sc)
	}

	// Apply while exported: the live export stops, and comes back on the
	// same URI with the snapshot's content.
	res = n.mustDo(apitypes.Plan{Op: apitypes.OpSnapshotApply, VolumeID: vol, Tag: tagB, Exports: []apitypes.NodeExport{live, snapExp}})
	if res.Size != 16*mib {
		t.Fatalf("apply size %d", res.Size)
	}
	if !patternMatches(t, "-r", "-f", "raw", "-c", "read -P 0xCD 0 1M", liveURI) {
		t.Fatal("the live export does not serve the applied snapshot")
	}
	if !patternMatches(t, "-r", "-f", "raw", "-c", "read -P 0xAB 0 1M", snapURI) {
		t.Fatal("the snapshot export changed across the apply")
	}

	n.mustDo(apitypes.Plan{Op: apitypes.OpExportDelete, VolumeID: vol, Export: &snapExp})
	if err := exec.Command("nbdinfo", snapURI).Run(); err == nil {
		t.Fatal("the snapshot export still serves after delete")
	}
	n.mustDo(apitypes.Plan{Op: apitypes.OpExportDelete, VolumeID: vol, Export: &snapExp}) // again: fine
	n.mustDo(apitypes.Plan{Op: apitypes.OpSnapshotDelete, VolumeID: vol, DeleteTags: []string{tagA}})

	// Delete with the live export running stops it.
	n.mustDo(apitypes.Plan{Op: apitypes.OpVolumeDelete, VolumeID: vol})
	if err := exec.Command("nbdinfo", liveURI).Run(); err == nil {
		t.Fatal("the live export still serves after the volume's delete")
	}
	if entries, _ := os.ReadDir(filepath.Join(n.data, "run")); len(entries) != 0 {
		t.Fatalf("run directory holds %v", entries)
	}
}

func TestImportWithProgressAndCancel(t *testing.T) {
	requireQEMU(t)
	srv := newFakeServer()
	n := startNode(t, srv, shortTempDir(t))
	src := filepath.Join(n.data, "src.raw")
	if err := os.WriteFile(src, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(src, 256*mib); err != nil {
		t.Fatal(err)
	}
	qemuIO(t, "-f", "raw", "-c", "write -P 0x5A 0 256M", src)
	vmdk := filepath.Join(n.data, "src.vmdk")
	if out, err := exec.Command("qemu-img", "convert", "-O", "vmdk", src, vmdk).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}

	vol := newID()
	id := n.start(apitypes.Plan{Op: apitypes.OpVolumeImport, VolumeID: vol, Source: vmdk, Sidecar: sidecarFor(vol, "imported")})
	res := n.wait(id)
	if res.Error != "" || res.Size != 256*mib {
		t.Fatalf("import: %+v", res)
	}
	if !patternMatches(t, "-r", "-f", "qcow2", "-c", "read -P 0x5A 255M 1M", n.volume(vol)) {
		t.Fatal("imported bytes differ")
	}
	if sc := n.sidecar(vol); sc.Size != 256*mib {
		t.Fatalf("sidecar size %d", sc.Size)
	}
	srv.mu.Lock()
	reports := srv.progress[id]
	srv.mu.Unlock()
	if len(reports) == 0 || reports[len(reports)-1].BytesTotal != 256*mib {
		t.Fatalf("progress reports: %+v", reports)
	}

	// Canceled at the first progress report.
	vol2 := newID()
	id = "task-" + newID()
	srv.mu.Lock()
	srv.cancel[id] = true
	srv.mu.Unlock()
	srv.tasks <- &apitypes.NodeTask{Task: apitypes.Task{ID: id}, Plan: apitypes.Plan{Op: apitypes.OpVolumeImport, VolumeID: vol2, Source: src, Format: "raw"}}
	res = n.wait(id)
	if res.ErrorCode != "canceled" {
		t.Fatalf("canceled import: %+v", res)
	}
	if _, err := os.Stat(n.volume(vol2)); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("a canceled import left its file")
	}

	// Not an image: refused before qemu-img (which would wait on the pipe).
	fifo := filepath.Join(n.data, "pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for src, what := range map[string]string{fifo: "is a fifo", n.data: "is a directory", "/dev/null": "is a character device"} {
		res = n.do(apitypes.Plan{Op: apitypes.OpVolumeImport, VolumeID: newID(), Source: src})
		if res.ErrorCode != "invalid" || !strings.Contains(res.Error, what+", not a disk image file or a block device") {
			t.Fatalf("import of %s: %+v", src, res)
		}
	}

	// A source that does not exist: qemu-img's message reaches the server.
	res = n.do(apitypes.Plan{Op: apitypes.OpVolumeImport, VolumeID: newID(), Source: filepath.Join(n.data, "nope.img")})
	if res.ErrorCode != "node_error" || !strings.Contains(res.Error, "qemu-img") || !strings.Contains(res.Error, "No such file") {
		t.Fatalf("import of a missing file: %+v", res)
	}
}

// TestRestartReportsInventoryAndRestoresExports runs a second worker on the
// data directory of a first one: it reports the tags, writes the sidecars the
// server returns, reaps leftovers and brings exports back on their ports.
func TestRestartReportsInventoryAndRestoresExports(t *testing.T) {
	requireQEMU(t)
	data := shortTempDir(t)
	srv := newFakeServer()
	n := startNode(t, srv, data)
	vol, tag := newID(), newID()
	n.mustDo(apitypes.Plan{Op: apitypes.OpVolumeCreate, VolumeID: vol, Size: 8 * mib})
	qemuIO(t, "-f", "qcow2", "-c", "write -P 0xAB 0 1M", n.volume(vol))
	n.mustDo(apitypes.Plan{Op: apitypes.OpSnapshotCreate, VolumeID: vol, Tag: tag})
	live := apitypes.NodeExport{ID: newID(), VolumeID: vol, Name: "live-" + newID()}
	live.Port = n.mustDo(apitypes.Plan{Op: apitypes.OpExportCreate, VolumeID: vol, Export: &live}).Port
	snapExp := apitypes.NodeExport{ID: newID(), VolumeID: vol, Tag: tag, Name: "snap-" + newID()}
	snapExp.Port = n.mustDo(apitypes.Plan{Op: apitypes.OpExportCreate, VolumeID: vol, Export: &snapExp}).Port
	n.stop()
	if err := exec.Command("nbdinfo", nbdURI(live.Port, live.Name)).Run(); err == nil {
		t.Fatal("exports still served after the worker stopped")
	}

	// What a crash leaves: a helper known only by its pidfile.
	leftPid := filepath.Join(data, "run", "exp-left.pid")
	port := testenv.FreePort(t)
	if out, err := exec.Command("qemu-nbd", "--fork", "-t", "-r", "-x", "x", "-b", "127.0.0.1", "-p", fmt.Sprint(port), "--pid-file", leftPid, "-f", "qcow2", n.volume(vol)).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	// A volume known only by its sidecar, and a file that is not an image.
	gone := newID()
	if err := os.WriteFile(filepath.Join(data, "volumes", gone+".json"), []byte(`{"id":"`+gone+`"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	broken := newID()
	if err := os.WriteFile(filepath.Join(data, "volumes", broken+".qcow2"), []byte("QFI\xfbgarbage"), 0o600); err != nil {
		t.Fatal(err)
	}

	srv2 := newFakeServer()
	sc := sidecarFor(vol, "restored", tag)
	srv2.volumes = apitypes.NodeVolumes{Volumes: []apitypes.NodeVolume{{ID: vol, State: "ready", Sidecar: *sc, Exports: []apitypes.NodeExport{live, snapExp}}}}
	startNode(t, srv2, data)

	inv := srv2.inventories[0]
	byID := map[string]apitypes.InventoryVolume{}
	for _, v := range inv.Volumes {
		byID[v.ID] = v
	}
	if v := byID[vol]; !v.Present || v.Size != 8*mib || len(v.Snapshots) != 1 || v.Snapshots[0].Tag != tag || v.Snapshots[0].Size != 8*mib || v.Snapshots[0].CreatedAt == "" {
		t.Fatalf("inventory of the volume: %+v", v)
	}
	if v, ok := byID[gone]; !ok || v.Present {
		t.Fatalf("inventory of a sidecar-only volume: %+v", v)
	}
	if v := byID[broken]; !v.Present || v.Error == "" {
		t.Fatalf("inventory of a broken file: %+v", v)
	}
	if got := (&testNode{t: t, data: data}).sidecar(vol); got.Name != "restored" {
		t.Fatalf("sidecar not written from the inventory answer: %+v", got)
	}
	if err := exec.Command("nbdinfo", nbdURI(port, "x")).Run(); err == nil {
		t.Fatal("the leftover qemu-nbd was not reaped")
	}
	if !patternMatches(t, "-r", "-f", "raw", "-c", "read -P 0xAB 0 1M", nbdURI(live.Port, live.Name)) {
		t.Fatal("the live export did not come back on its port")
	}
	if !patternMatches(t, "-r", "-f", "raw", "-c", "read -P 0xAB 0 1M", nbdURI(snapExp.Port, snapExp.Name)) {
		t.Fatal("the snapshot export did not come back on its port")
	}
}

func TestSidecarWriteIsAtomic(t *testing.T) {
	dir := shortTempDir(t)
	w := &Worker{DataDir: dir}
	if err := os.MkdirAll(w.volumesDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	id := newID()
	a, b := sidecarFor(id, "a"), sidecarFor(id, "b")
	b.Labels = map[string]string{"padding": strings.Repeat("x", 64<<10)} // spans several writes
	if err := w.writeSidecar(a); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			data, err := os.ReadFile(w.sidecarPath(id))
			if err != nil {
				t.Errorf("reader: %v", err)
				return
			}
			var sc apitypes.Sidecar
			if err := json.Unmarshal(data, &sc); err != nil || (sc.Name != "a" && sc.Name != "b") {
				t.Errorf("reader saw a partial sidecar (%v): %.80q", err, data)
				return
			}
		}
	}()
	for i := 0; i < 200; i++ {
		sc := a
		if i%2 == 1 {
			sc = b
		}
		if err := w.writeSidecar(sc); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	entries, _ := os.ReadDir(w.volumesDir())
	if len(entries) != 1 {
		t.Fatalf("temporary files left: %v", entries)
	}
	if err := w.writeSidecar(&apitypes.Sidecar{ID: "../escape"}); err == nil {
		t.Fatal("a sidecar id with a path was accepted")
	}
}

// failpointChildEnv makes the test binary a node with a failpoint set, run by
// TestFailpointKillsTheNode.
const failpointChildEnv = "CAIRN_NODE_TEST_FAILPOINT_CHILD"

func TestFailpointChild(t *testing.T) {
	data := os.Getenv(failpointChildEnv)
	if data == "" {
		return // only meaningful as the child of TestFailpointKillsTheNode
	}
	srv := newFakeServer()
	vol := filepath.Base(data)
	srv.tasks <- &apitypes.NodeTask{Task: apitypes.Task{ID: "t1"}, Plan: apitypes.Plan{Op: apitypes.OpSnapshotCreate, VolumeID: vol, Tag: "f00d0000-0000-4000-8000-000000000001", Sidecar: sidecarFor(vol, "after")}}
	n := startNode(t, srv, filepath.Dir(data))
	n.wait("t1")
	t.Fatal("the failpoint did not fire")
}

func TestFailpointKillsTheNode(t *testing.T) {
	requireQEMU(t)
	data := shortTempDir(t)
	vol := newID()
	w := &Worker{DataDir: data}
	if err := os.MkdirAll(w.volumesDir(), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := qemu.Create(t.Context(), w.volumePath(vol), 8*mib); err != nil {
		t.Fatal(err)
	}
	if err := w.writeSidecar(sidecarFor(vol, "before")); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		when     string
		wantTags int
	}{{"before-disk", 0}, {"after-disk", 1}} {
		child := exec.Command(os.Args[0], "-test.run=^TestFailpointChild$")
		child.Env = append(os.Environ(), failpointChildEnv+"="+filepath.Join(data, vol), "CAIRN_FAILPOINT=snapshot.create:"+tc.when)
		out, err := child.CombinedOutput()
		var exitErr *exec.ExitError
		if !errors.As(err, &exitErr) || exitErr.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
			t.Fatalf("%s: child ended with %v, want SIGKILL\n%s", tc.when, err, out)
		}
		if tags := tagsOf(t, w.volumePath(vol)); len(tags) != tc.wantTags {
			t.Fatalf("%s: tags %v", tc.when, tags)
		}
		// The sidecar is written after the failpoint: still the old one.
		if sc := (&testNode{t: t, data: data}).sidecar(vol); sc.Name != "before" {
			t.Fatalf("%s: sidecar %q", tc.when, sc.Name)
		}
	}
}

func TestVolumeLocksSerialise(t *testing.T) {
	var l volumeLocks
	var mu sync.Mutex
	inside := map[string]int{}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ids := []string{"a", "b"}
			if i%2 == 1 {
				ids = []string{"b", "a", "b"}
			}
			unlock := l.lock(ids...)
			mu.Lock()
			for _, id := range sortedUnique(ids) {
				inside[id]++
				if inside[id] > 1 {
					t.Errorf("two holders of %s", id)
				}
			}
			mu.Unlock()
			time.Sleep(time.Millisecond)
			mu.Lock()
			for _, id := range sortedUnique(ids) {
				inside[id]--
			}
			mu.Unlock()
			unlock()
		}()
	}
	wg.Wait()
	if len(l.held) != 0 {
		t.Fatalf("locks left: %v", l.held)
	}
}
