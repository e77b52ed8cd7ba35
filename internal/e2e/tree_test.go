package e2e

import (
	"fmt"
	"math/rand"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/core"
)

const cluster = 64 << 10

// model is what a volume must hold after each step, by the rules of DESIGN F2.
type model struct {
	size  int64
	live  []byte // one pattern byte per 64 KiB cluster; 0 = zeros
	snaps map[string]*modelSnap
	head  string // name of head_parent, "" = none
}

type modelSnap struct {
	parent  string
	content []byte
	size    int64
}

func newModel(size int64) *model {
	return &model{size: size, live: make([]byte, size/cluster), snaps: map[string]*modelSnap{}}
}

func (m *model) create(name string) {
	m.snaps[name] = &modelSnap{parent: m.head, content: append([]byte(nil), m.live...), size: m.size}
	m.head = name
}

func (m *model) apply(name string) {
	s := m.snaps[name]
	m.live = append([]byte(nil), s.content...)
	m.size = s.size
	m.head = name
}

func (m *model) children(name string) []string {
	var out []string
	for n, s := range m.snaps {
		if s.parent == name {
			out = append(out, n)
		}
	}
	return out
}

func (m *model) deleteOne(name string) {
	s := m.snaps[name]
	for _, c := range m.children(name) {
		m.snaps[c].parent = s.parent
	}
	if m.head == name {
		m.head = s.parent
	}
	delete(m.snaps, name)
}

func (m *model) deleteSubtree(name string) {
	parent := m.snaps[name].parent
	var walk func(string)
	walk = func(n string) {
		for _, c := range m.children(n) {
			walk(c)
		}
		if m.head == n {
			m.head = parent
		}
		delete(m.snaps, n)
	}
	walk(name)
}

// treeRun drives one volume through a script and checks everything after each step.
type treeRun struct {
	t        *testing.T
	c        *client.Client
	srv      *serverProc
	vol      apitypes.Volume
	m        *model
	exported bool   // the volume stays exported writable (QMP path)
	liveURI  string // its writable export
	liveID   string
	scratch  int // a cluster the background writer may touch; excluded from checks (-1 = none)
	saved    int
}

func newTreeRun(t *testing.T, srv *serverProc, c *client.Client, name string, exported bool) *treeRun {
	ctx := testCtx(t)
	size := int64(1 << 20)
	task := waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: name, Size: size}))
	vol, err := c.GetVolume(ctx, task.ResourceID)
	if err != nil {
		t.Fatal(err)
	}
	r := &treeRun{t: t, c: c, srv: srv, vol: vol, m: newModel(size), exported: exported, scratch: -1}
	if exported {
		r.scratch = len(r.m.live) - 1
		r.liveID, r.liveURI = r.export("", true)
	}
	return r
}

// export makes an export and returns its id and URI.
func (r *treeRun) export(snapshot string, writable bool) (string, string) {
	ctx := testCtx(r.t)
	task := waitOK(r.t, r.c)(r.c.CreateExport(ctx, r.vol.ID, apitypes.ExportCreate{Snapshot: snapshot, Writable: writable}))
	e, err := r.c.GetExport(ctx, r.vol.ID, task.ResourceID)
	if err != nil {
		r.t.Fatal(err)
	}
	if !strings.HasPrefix(e.URI, "nbd://127.0.0.1:") {
		r.t.Fatalf("export URI %q: want nbd://127.0.0.1:PORT/NAME", e.URI)
	}
	return e.ID, e.URI
}

func (r *treeRun) unexport(id string) {
	waitOK(r.t, r.c)(r.c.DeleteExport(testCtx(r.t), r.vol.ID, id))
}

func (r *treeRun) write(cl int, pattern byte) {
	uri, id := r.liveURI, ""
	if !r.exported {
		id, uri = r.export("", true)
	}
	out := runTool(r.t, "qemu-io", "-f", "raw", "-c", fmt.Sprintf("write -P 0x%02x %d %d", pattern, int64(cl)*cluster, cluster), uri)
	if strings.Contains(out, "failed") {
		r.t.Fatalf("qemu-io write: %s", out)
	}
	if id != "" {
		r.unexport(id)
	}
	r.m.live[cl] = pattern
}

// readCheck reads every cluster of an NBD export and compares it with want.
func (r *treeRun) readCheck(what, uri string, want []byte, size int64) {
	r.t.Helper()
	out, err := exec.Command("qemu-img", "info", "--output=json", "-f", "raw", uri).CombinedOutput()
	if err != nil {
		r.t.Fatalf("%s: qemu-img info %s: %v\n%s", what, uri, err, out)
	}
	if !strings.Contains(string(out), fmt.Sprintf(`"virtual-size": %d`, size)) {
		r.t.Fatalf("%s: size is not %d:\n%s", what, size, out)
	}
	args := []string{"-r", "-f", "raw"}
	for i, p := range want {
		if i == r.scratch {
			continue
		}
		args = append(args, "-c", fmt.Sprintf("read -P 0x%02x %d %d", p, int64(i)*cluster, cluster))
	}
	args = append(args, uri)
	res := runTool(r.t, "qemu-io", args...)
	if strings.Contains(res, "Pattern verification failed") || strings.Contains(res, "failed") {
		r.t.Fatalf("%s: bytes differ from the model %x:\n%s", what, want, res)
	}
}

// check compares the API's tree and every byte with the model.
func (r *treeRun) check(step string) {
	r.t.Helper()
	ctx := testCtx(r.t)
	vol, err := r.c.GetVolume(ctx, r.vol.ID)
	if err != nil {
		r.t.Fatalf("%s: %v", step, err)
	}
	snaps, err := r.c.AllSnapshots(ctx, r.vol.ID)
	if err != nil {
		r.t.Fatalf("%s: %v", step, err)
	}
	byID := map[string]apitypes.Snapshot{}
	for _, s := range snaps {
		byID[s.ID] = s
	}
	nameOf := func(id *string) string {
		if id == nil {
			return ""
		}
		return byID[*id].Name
	}
	got := map[string]string{}
	for _, s := range snaps {
		if s.State != apitypes.SnapshotReady {
			r.t.Fatalf("%s: snapshot %s is %s", step, s.Name, s.State)
		}
		got[s.Name] = nameOf(s.ParentID)
	}
	want := map[string]string{}
	for n, s := range r.m.snaps {
		want[n] = s.parent
	}
	if fmt.Sprint(sortedPairs(got)) != fmt.Sprint(sortedPairs(want)) {
		r.t.Fatalf("%s: tree (name<-parent)\n got %v\nwant %v", step, sortedPairs(got), sortedPairs(want))
	}
	if h := nameOf(vol.HeadParentID); h != r.m.head {
		r.t.Fatalf("%s: head_parent %q, want %q", step, h, r.m.head)
	}
	if vol.Size != r.m.size {
		r.t.Fatalf("%s: volume size %d, want %d", step, vol.Size, r.m.size)
	}
	if vol.SnapshotCount != len(r.m.snaps) {
		r.t.Fatalf("%s: snapshot_count %d, want %d", step, vol.SnapshotCount, len(r.m.snaps))
	}
	// Bytes of every snapshot through read-only snapshot exports. QEMU 7.2
	// serves a snapshot at the image's current size: a snapshot larger than
	// the volume is now is refused, a smaller one reads as zeros past its end.
	for name, s := range r.m.snaps {
		if s.size > r.m.size {
			_, err := r.c.CreateExport(ctx, r.vol.ID, apitypes.ExportCreate{Snapshot: name})
			if core.CodeOf(err) != "snapshot_larger_than_volume" {
				r.t.Fatalf("%s: exporting snapshot %s larger than the volume: %v, want 409 snapshot_larger_than_volume", step, name, err)
			}
			continue
		}
		id, uri := r.export(name, false)
		content := append(append([]byte(nil), s.content...), make([]byte, (r.m.size-s.size)/cluster)...)
		r.readCheck(step+": snapshot "+name, uri, content, r.m.size)
		r.unexport(id)
	}
	// Bytes of the live disk.
	if r.exported {
		r.readCheck(step+": live disk", r.liveURI, r.m.live, r.m.size)
	} else {
		id, uri := r.export("", false)
		r.readCheck(step+": live disk", uri, r.m.live, r.m.size)
		r.unexport(id)
		r.qemuCheck(step)
	}
}

func (r *treeRun) qemuCheck(step string) {
	r.t.Helper()
	path := filepath.Join(r.srv.Data, "volumes", r.vol.ID+".qcow2")
	out, err := exec.Command("qemu-img", "check", "-U", path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "No errors were found") {
		r.t.Fatalf("%s: qemu-img check: %v\n%s", step, err, out)
	}
}

func sortedPairs(m map[string]string) []string {
	var out []string
	for k, v := range m {
		out = append(out, k+"<-"+v)
	}
	sort.Strings(out)
	return out
}

// step runs one script line.
func (r *treeRun) step(line string) {
	r.t.Helper()
	ctx := testCtx(r.t)
	f := strings.Fields(line)
	switch f[0] {
	case "write":
		cl, _ := strconv.Atoi(f[1])
		p, _ := strconv.ParseUint(f[2], 16, 8)
		r.write(cl, byte(p))
		return // a write alone changes no tree; the next step checks the bytes
	case "create":
		if r.exported {
			stop := r.backgroundWriter()
			waitOK(r.t, r.c)(r.c.CreateSnapshot(ctx, r.vol.ID, apitypes.SnapshotCreate{Name: f[1]}))
			stop()
		} else {
			waitOK(r.t, r.c)(r.c.CreateSnapshot(ctx, r.vol.ID, apitypes.SnapshotCreate{Name: f[1]}))
		}
		r.m.create(f[1])
	case "apply":
		save := len(f) > 2 && f[2] == "save"
		task := waitOK(r.t, r.c)(r.c.ApplySnapshot(ctx, r.vol.ID, f[1], apitypes.SnapshotApply{SaveCurrent: save}))
		if save {
			id := task.Result["saved_snapshot_id"]
			sn, err := r.c.GetSnapshot(ctx, r.vol.ID, id)
			if err != nil {
				r.t.Fatalf("%s: saved snapshot %q: %v", line, id, err)
			}
			r.m.create(sn.Name)
		}
		r.m.apply(f[1])
	case "revert":
		task, err := r.c.RevertVolume(ctx, r.vol.ID)
		if r.m.head == "" {
			if core.CodeOf(err) != "nothing_to_revert" {
				r.t.Fatalf("%s: revert with no head_parent: got %v, want 409 nothing_to_revert", line, err)
			}
		} else {
			mustTask(r.t, r.c, task, err)
			r.m.apply(r.m.head)
		}
	case "delete":
		waitOK(r.t, r.c)(r.c.DeleteSnapshot(ctx, r.vol.ID, f[1], false))
		r.m.deleteOne(f[1])
	case "delete-subtree":
		waitOK(r.t, r.c)(r.c.DeleteSnapshot(ctx, r.vol.ID, f[1], true))
		r.m.deleteSubtree(f[1])
	case "grow":
		size, err := core.ParseSize(f[1])
		if err != nil {
			r.t.Fatal(err)
		}
		waitOK(r.t, r.c)(r.c.GrowVolume(ctx, r.vol.ID, apitypes.VolumeGrow{Size: size}))
		r.m.size = size
		r.m.live = append(r.m.live, make([]byte, size/cluster-int64(len(r.m.live)))...)
	default:
		r.t.Fatalf("unknown step %q", line)
	}
	r.check(line)
}

// backgroundWriter keeps writing the scratch cluster through the writable
// export until stopped.
func (r *treeRun) backgroundWriter() func() {
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_ = exec.Command("qemu-io", "-f", "raw", "-c",
				fmt.Sprintf("write -P 0x%02x %d %d", 0x80+i%64, int64(r.scratch)*cluster, cluster), r.liveURI).Run()
		}
	}()
	return func() { close(stop); <-done }
}

func (r *treeRun) run(script string) {
	for _, line := range strings.Split(script, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		r.step(line)
	}
}

// The scripts cover each rule of DESIGN F2 in several orders.
var treeScripts = map[string]string{
	"linear-apply-revert": `
		revert
		write 0 a1
		create s1
		write 1 b2
		create s2
		write 2 c3
		apply s1
		write 3 d4
		revert
		apply s2
		revert`,
	"branches-and-delete-one": `
		write 0 11
		create root
		write 1 22
		create a
		apply root
		write 2 33
		create b
		write 3 44
		create b2
		apply a
		write 4 55
		create a2
		# delete the head's parent: head moves to its parent
		delete a2
		# delete a snapshot with two children: both move to the root
		delete root
		apply b save
		revert`,
	"delete-subtree-with-head": `
		write 0 01
		create p
		write 1 02
		create q
		write 2 03
		create r
		apply q
		write 3 04
		create q2
		# the head is inside q's subtree: it moves to p
		delete-subtree q
		write 4 05
		create after
		delete-subtree p
		revert`,
	"apply-after-grow": `
		write 0 aa
		create small
		grow 2M
		write 20 bb
		create big
		apply small
		write 1 cc
		apply big save
		grow 3M
		revert
		delete small
		apply big`,
}

func TestTreeSemantics(t *testing.T) {
	srv := startServer(t, serverOpts{})
	c := srv.Client(t)
	names := make([]string, 0, len(treeScripts))
	for n := range treeScripts {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			r := newTreeRun(t, srv, c, name, false)
			r.run(treeScripts[name])
		})
	}
}

// TestTreeSemanticsExported runs the same scripts while the volume stays
// exported writable: snapshot create and delete go through QMP, with a writer
// active during each create; apply restarts the export on the same URI.
func TestTreeSemanticsExported(t *testing.T) {
	srv := startServer(t, serverOpts{})
	c := srv.Client(t)
	for _, name := range []string{"branches-and-delete-one", "apply-after-grow"} {
		t.Run(name, func(t *testing.T) {
			r := newTreeRun(t, srv, c, name+"-x", true)
			r.run(treeScripts[name])
			e, err := c.GetExport(testCtx(t), r.vol.ID, r.liveID)
			if err != nil || e.URI != r.liveURI {
				t.Fatalf("after applies the export is %+v (%v), want the same URI %s", e, err, r.liveURI)
			}
			r.unexport(r.liveID)
			r.qemuCheck("end")
		})
	}
}

// TestTreeRandom drives random sequences of every operation against the model.
func TestTreeRandom(t *testing.T) {
	srv := startServer(t, serverOpts{})
	c := srv.Client(t)
	seed := time.Now().UnixNano()
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewSource(seed))
	r := newTreeRun(t, srv, c, "random", false)
	n := 0
	pick := func() string {
		var names []string
		for k := range r.m.snaps {
			names = append(names, k)
		}
		sort.Strings(names)
		return names[rng.Intn(len(names))]
	}
	for i := 0; i < 14; i++ {
		var line string
		switch op := rng.Intn(10); {
		case op < 3 || len(r.m.snaps) == 0:
			n++
			r.step(fmt.Sprintf("write %d %02x", rng.Intn(len(r.m.live)), 1+rng.Intn(254)))
			line = fmt.Sprintf("create r%d", n)
		case op < 5:
			line = "apply " + pick()
			if rng.Intn(3) == 0 {
				line += " save"
			}
		case op < 6:
			line = "revert"
		case op < 8:
			line = "delete " + pick()
		default:
			line = "delete-subtree " + pick()
		}
		t.Logf("step %d: %s", i, line)
		r.step(line)
	}
}

// TestSnapshotUniqueBytes: a snapshot's unique_bytes is what deleting it
// would free: the clusters the live disk rewrote since.
func TestSnapshotUniqueBytes(t *testing.T) {
	data := t.TempDir()
	srv := startServer(t, serverOpts{data: data})
	c := srv.Client(t)
	ctx := testCtx(t)
	task := waitOK(t, c)(c.CreateVolume(ctx, apitypes.VolumeCreate{Name: "u", Size: 16 << 20}))
	file := filepath.Join(data, "volumes", task.ResourceID+".qcow2")
	runTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x11 0 4M", file)
	cliOK(t, srv, "snapshot", "create", "u", "--name", "a")
	runTool(t, "qemu-io", "-f", "qcow2", "-c", "write -P 0x22 0 2M", file)
	cliOK(t, srv, "snapshot", "create", "u", "--name", "b")
	var snaps []apitypes.Snapshot
	cliJSON(t, srv, &snaps, "snapshot", "list", "u")
	got := map[string]int64{}
	for _, s := range snaps {
		got[s.Name] = s.UniqueBytes
	}
	// a alone holds the 2 MiB the live disk rewrote (and its own tables);
	// b shares everything with the live disk but its L1 table.
	if got["a"] < 2<<20 || got["a"] > 3<<20 || got["b"] == 0 || got["b"] > 256<<10 {
		t.Fatalf("unique bytes: %v", got)
	}
}
