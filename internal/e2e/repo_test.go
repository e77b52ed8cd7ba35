package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/qemu"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// repoEnv runs `cairn repo` commands against one repository.
type repoEnv struct {
	t    testing.TB
	repo string
	env  []string
	cred *syscall.Credential // run as this user, when set
	bin  string              // the cairn binary, when not cairnBin
}

func newRepoEnv(t testing.TB, repo string, extraEnv ...string) *repoEnv {
	e := &repoEnv{t: t, repo: repo, env: append([]string{"CAIRN_REPO=" + repo, "CAIRN_PASSWORD=e2e password"}, extraEnv...)}
	return e
}

func (e *repoEnv) command(args ...string) *exec.Cmd {
	bin := cairnBin
	if e.bin != "" {
		bin = e.bin
	}
	cmd := exec.Command(bin, append([]string{"repo"}, args...)...)
	cmd.Env = append(os.Environ(), e.env...)
	if e.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: e.cred}
	}
	return cmd
}

// run runs a command and returns its stdout, stderr and exit code.
func (e *repoEnv) run(args ...string) (string, string, int) {
	e.t.Helper()
	cmd := e.command(args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		e.t.Fatalf("cairn repo %s: %v", strings.Join(args, " "), err)
	}
	return out.String(), errb.String(), code
}

// ok runs a command that must succeed.
func (e *repoEnv) ok(args ...string) string {
	e.t.Helper()
	out, errs, code := e.run(args...)
	if code != 0 {
		e.t.Fatalf("cairn repo %s: exit %d\n%s%s", strings.Join(args, " "), code, out, errs)
	}
	return out
}

// asNobody makes the commands run as user nobody, from a copy of the binary
// in dir (which nobody must be able to enter).
func (e *repoEnv) asNobody(dir string) {
	e.t.Helper()
	e.cred = &syscall.Credential{Uid: 65534, Gid: 65534}
	e.bin = filepath.Join(dir, "cairn")
	b, err := os.ReadFile(cairnBin)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := os.WriteFile(e.bin, b, 0o755); err != nil {
		e.t.Fatal(err)
	}
}

// startUntil starts a command and returns once cond holds (checked every
// millisecond, for up to 30 s; the test fails if it never does).
func (e *repoEnv) startUntil(what string, cond func() bool, args ...string) (*exec.Cmd, *bytes.Buffer) {
	e.t.Helper()
	cmd := e.command(args...)
	stderr := &bytes.Buffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatal(err)
	}
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		if cond() {
			return cmd, stderr
		}
	}
	cmd.Wait()
	e.t.Fatalf("never true: %s\n%s", what, stderr.String())
	return nil, nil
}

// fails runs a command that must exit with code, its stderr containing msg.
func (e *repoEnv) fails(code int, msg string, args ...string) {
	e.t.Helper()
	out, errs, got := e.run(args...)
	if got != code || !strings.Contains(errs, msg) {
		e.t.Fatalf("cairn repo %s: exit %d (want %d), stderr %q (want %q)\n%s", strings.Join(args, " "), got, code, errs, msg, out)
	}
}

func (e *repoEnv) backups() []apitypes.Backup {
	e.t.Helper()
	var bs []apitypes.Backup
	if err := json.Unmarshal([]byte(e.ok("backups", "--output", "json")), &bs); err != nil {
		e.t.Fatal(err)
	}
	return bs
}

// randomImage writes a sparse raw image with data at a few places.
func randomImage(t testing.TB, path string, size int64, seed uint64) {
	t.Helper()
	rng := mrand.New(mrand.NewPCG(seed, 1))
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.Truncate(size)
	buf := make([]byte, 256<<10)
	for i := 0; i < int(size/(1<<20)); i++ {
		off := rng.Int64N(size - int64(len(buf)))
		if i%2 == 0 {
			rand.Read(buf)
		} else {
			copy(buf, bytes.Repeat([]byte(fmt.Sprintf("line %d of text\n", i)), len(buf)/16))
		}
		f.WriteAt(buf, off)
	}
}

func sameFile(t testing.TB, a, b string) bool {
	t.Helper()
	x, err1 := os.ReadFile(a)
	y, err2 := os.ReadFile(b)
	return err1 == nil && err2 == nil && bytes.Equal(x, y)
}

func TestRepoCLI(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io")
	dir := t.TempDir()
	e := newRepoEnv(t, filepath.Join(dir, "repo"))
	e.fails(3, "create the repository first", "backups")
	e.ok("init")
	e.fails(4, "a repository already exists at "+e.repo, "init")
	// A directory holding something else is not made a repository.
	busy := filepath.Join(dir, "busy")
	os.MkdirAll(busy, 0o755)
	os.WriteFile(filepath.Join(busy, "notes.txt"), []byte("mine\n"), 0o644)
	newRepoEnv(t, busy).fails(4, "creating a repository at "+busy+": the location is not empty", "init")
	if names, _ := os.ReadDir(busy); len(names) != 1 {
		t.Fatalf("a refused init left %d entries in %s, want 1", len(names), busy)
	}

	// An image backup of a raw and of a qcow2 file, restored both ways.
	raw := filepath.Join(dir, "disk.raw")
	randomImage(t, raw, 24<<20, 1)
	e.ok("backup", "--image", raw, "--tag", "volume=disk")
	qc := filepath.Join(dir, "disk.qcow2")
	runTool(t, "qemu-img", "create", "-q", "-f", "qcow2", qc, "32M")
	runTool(t, "qemu-io", "-c", "write -P 0x5a 1M 3M", "-c", "write -z 8M 1M", "-c", "write -P 0x11 31M 1M", qc)
	e.ok("backup", "--image", qc, "--tag", "volume=qc")
	bs := e.backups()
	if len(bs) != 2 || bs[0].Kind != "image" || bs[0].LogicalSize != 24<<20 || bs[1].LogicalSize != 32<<20 {
		t.Fatalf("backups: %+v", bs)
	}
	out := filepath.Join(dir, "out.raw")
	e.ok("restore", bs[0].ID[:8], "--to-file", out)
	if !sameFile(t, raw, out) {
		t.Fatal("restored raw image differs")
	}
	e.fails(4, "exists", "restore", bs[0].ID, "--to-file", out)
	// --overwrite replaces the image, which keeps its mode; a directory or a
	// device is no image file, and nothing is written.
	os.Chmod(out, 0o640)
	os.WriteFile(out, []byte("not the image"), 0o640)
	e.ok("restore", bs[0].ID, "--to-file", out, "--overwrite")
	if fi, err := os.Stat(out); err != nil {
		t.Fatal(err)
	} else if fi.Mode().Perm() != 0o640 || !sameFile(t, raw, out) {
		t.Fatalf("restore --overwrite: mode %v (want 0640), same bytes %v", fi.Mode().Perm(), sameFile(t, raw, out))
	}
	e.fails(2, "is a directory", "restore", bs[0].ID, "--to-file", dir, "--overwrite")
	e.fails(2, "is a character device", "restore", bs[0].ID, "--to-file", "/dev/null", "--overwrite")
	e.fails(2, "not VMDK", "restore", bs[0].ID, "--to-file", filepath.Join(dir, "out.vmdk"))
	if _, err := os.Lstat(filepath.Join(dir, "out.vmdk")); err == nil {
		t.Fatal("a refused restore left a file")
	}
	// --image takes image files only; a named pipe is refused, not opened
	// (which would wait for a writer).
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	e.fails(2, "pipe is a fifo: --image reads disk image files", "backup", "--image", fifo)
	e.fails(2, "is a directory: --image reads disk image files", "backup", "--image", dir)
	outq := filepath.Join(dir, "out.qcow2")
	e.ok("restore", "latest", "--tag", "volume=qc", "--to-file", outq)
	runTool(t, "qemu-img", "compare", "-q", qc, outq)
	if info := runTool(t, "qemu-img", "info", outq); !strings.Contains(info, "file format: qcow2") {
		t.Fatalf("restored image is not qcow2:\n%s", info)
	}

	// A file tree, restored whole and in part.
	src := filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "etc", "ssh"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "ssh", "sshd_config"), []byte("Port 22\n"), 0o600)
	os.WriteFile(filepath.Join(src, "etc", "hosts"), []byte("127.0.0.1 localhost\n"), 0o644)
	os.Symlink("hosts", filepath.Join(src, "etc", "hosts.link"))
	e.ok("backup", src)
	target := filepath.Join(dir, "target")
	e.ok("restore", "latest", "--target", target, "--include", "src/etc/ssh")
	if !sameFile(t, filepath.Join(src, "etc/ssh/sshd_config"), filepath.Join(target, "src/etc/ssh/sshd_config")) {
		t.Fatal("included file not restored")
	}
	if _, err := os.Lstat(filepath.Join(target, "src/etc/hosts")); err == nil {
		t.Fatal("a file outside --include was restored")
	}
	// A second restore over the first: each entry in the way is named
	// (the error itself names only the first), and --overwrite replaces them.
	whole := filepath.Join(dir, "whole")
	if got := e.ok("restore", "latest", "--target", whole); !strings.Contains(got, ": 2 files, ") {
		t.Fatalf("restore: %q", got)
	}
	_, errs, code := e.run("restore", "latest", "--target", whole)
	if code != 4 || !strings.Contains(errs, "3 entries were not restored") {
		t.Fatalf("restore over a restore: exit %d (want 4), stderr:\n%s", code, errs)
	}
	for _, name := range []string{"src/etc/ssh/sshd_config", "src/etc/hosts", "src/etc/hosts.link"} {
		if !strings.Contains(errs, "cairn: error: "+filepath.Join(whole, name)+": already exists") {
			t.Errorf("restore over a restore does not name %s:\n%s", name, errs)
		}
	}
	e.ok("restore", "latest", "--target", whole, "--overwrite")
	ls := e.ok("ls", "latest", "src/etc")
	if !strings.Contains(ls, "src/etc/hosts.link -> hosts") {
		t.Fatalf("ls:\n%s", ls)
	}
	// Paths as they were on the host name the same entries; a path that is
	// in neither form gets an error that says how the backup names them.
	if abs := e.ok("ls", "latest", filepath.Join(src, "etc")); abs != ls {
		t.Fatalf("ls of %s:\n%s\nwant the listing of src/etc:\n%s", filepath.Join(src, "etc"), abs, ls)
	}
	partial := filepath.Join(dir, "partial")
	e.ok("restore", "latest", "--target", partial, "--include", filepath.Join(src, "etc", "hosts"))
	if !sameFile(t, filepath.Join(src, "etc/hosts"), filepath.Join(partial, "src/etc/hosts")) {
		t.Fatal("a file included by its path on the host was not restored")
	}
	if _, err := os.Lstat(filepath.Join(partial, "src/etc/ssh")); err == nil {
		t.Fatal("a directory outside --include (given as on the host) was restored")
	}
	hint := "(its paths start with src/, or give them as they were on the host, below " + src + ")"
	e.fails(3, `no "etc" in backup `, "ls", "latest", "etc")
	e.fails(3, hint, "ls", "latest", "/etc")
	e.fails(3, `include path "etc/ssh" is not in the backup `+hint, "restore", "latest", "--target", filepath.Join(dir, "none"), "--include", "etc/ssh")
	if _, err := os.Lstat(filepath.Join(dir, "none")); err == nil {
		t.Fatal("a refused restore created its target")
	}

	// cat: an index object lists packs and their blobs; the pack's header
	// says the same; a data blob prints its plaintext.
	idxNames, err := filepath.Glob(filepath.Join(e.repo, "index", "*"))
	if err != nil || len(idxNames) == 0 {
		t.Fatalf("no index objects: %v", err)
	}
	var index []struct {
		Pack  string `json:"pack"`
		Blobs []struct {
			Type      string `json:"type"`
			ID        string `json:"id"`
			Length    int    `json:"length"`
			RawLength int    `json:"raw_length"`
		} `json:"blobs"`
	}
	if err := json.Unmarshal([]byte(e.ok("cat", "index", filepath.Base(idxNames[0]))), &index); err != nil {
		t.Fatal(err)
	}
	if len(index) == 0 || len(index[0].Pack) != 64 || len(index[0].Blobs) == 0 || index[0].Blobs[0].RawLength == 0 {
		t.Fatalf("cat index: %+v", index)
	}
	if hdr := e.ok("cat", "pack", index[0].Pack); !strings.Contains(hdr, `"id": "`+index[0].Blobs[0].ID+`"`) &&
		!strings.Contains(hdr, `"id":"`+index[0].Blobs[0].ID+`"`) {
		t.Fatalf("cat pack %s does not list blob %s:\n%s", index[0].Pack, index[0].Blobs[0].ID, hdr)
	}
	for _, b := range index[0].Blobs {
		if b.Type == "data" {
			if got := e.ok("cat", "blob", b.ID); len(got) != b.RawLength {
				t.Fatalf("cat blob %s: %d bytes, the index says %d", b.ID, len(got), b.RawLength)
			}
			break
		}
	}
	e.fails(2, "", "cat", "pack", "not-hex")

	// Exit codes of DESIGN 2b.
	bad := newRepoEnv(t, e.repo)
	bad.env[1] = "CAIRN_PASSWORD=not it"
	bad.fails(6, "wrong password", "backups")
	e.fails(3, "no backup", "restore", "00000000", "--to-file", filepath.Join(dir, "x.raw"))
	e.fails(2, "give either", "restore", "latest")
	e.fails(2, "nothing to forget", "forget")
	e.fails(2, "--read-data", "verify", "--read-data=abc")
	e.fails(2, "unknown flag", "backup", "--nope")
	e.fails(3, "does not exist", "backup", "--image", filepath.Join(dir, "missing.raw"))
	e.fails(2, "is a file backup", "restore", "latest", "--to-file", filepath.Join(dir, "y.raw"))

	// Stats, forget with a policy, prune.
	var st struct {
		Backups     int     `json:"backups"`
		StoredBytes int64   `json:"stored_bytes"`
		DedupRatio  float64 `json:"dedup_ratio"`
		PerBackup   []struct {
			OnlyBytes int64 `json:"only_bytes"`
		} `json:"per_backup"`
	}
	json.Unmarshal([]byte(e.ok("stats", "--output", "json")), &st)
	if st.Backups != 3 || st.StoredBytes == 0 || len(st.PerBackup) != 3 || st.PerBackup[0].OnlyBytes == 0 {
		t.Fatalf("stats: %+v", st)
	}
	e.ok("backup", "--image", raw, "--tag", "volume=disk")
	plan := e.ok("forget", "--keep-last", "1", "--tag", "volume=disk", "--dry-run", "--output", "json")
	var fr struct {
		Keep, Remove []apitypes.Backup
	}
	json.Unmarshal([]byte(plan), &fr)
	if len(fr.Keep) != 1 || len(fr.Remove) != 1 || fr.Remove[0].ID != bs[0].ID {
		t.Fatalf("forget plan: %s", plan)
	}
	if got := e.ok("forget", "--keep-last", "1", "--tag", "volume=disk", "--prune"); !strings.HasPrefix(got, "keeping 1 backup, removed 1\n") ||
		!strings.Contains(got, "\nprune: ") {
		t.Fatalf("forget --prune:\n%s", got)
	}
	if n := len(e.backups()); n != 3 {
		t.Fatalf("%d backups after forget, want 3", n)
	}
	if got := e.ok("verify", "--read-data"); !strings.HasPrefix(got, "checked 3 backups, ") || !strings.Contains(got, "no problems found") {
		t.Fatalf("verify --read-data after prune:\n%s", got)
	}
	os.Remove(out)
	e.ok("restore", "latest", "--tag", "volume=disk", "--to-file", out)
	if !sameFile(t, raw, out) {
		t.Fatal("restored raw image differs after prune")
	}

	// Keys.
	pw2 := filepath.Join(dir, "pw2")
	os.WriteFile(pw2, []byte("second password\n"), 0o600)
	e.ok("key", "add", "--new-password-file", pw2)
	other := newRepoEnv(t, e.repo)
	other.env[1] = "CAIRN_PASSWORD_FILE=" + pw2
	if n := len(other.backups()); n != 3 {
		t.Fatalf("second password sees %d backups", n)
	}
}

// TestRepoConcurrentWriters runs several backup processes into one
// repository at once.
func TestRepoConcurrentWriters(t *testing.T) {
	dir := t.TempDir()
	e := newRepoEnv(t, filepath.Join(dir, "repo"))
	e.ok("init")
	const n = 4
	var wg sync.WaitGroup
	errs := make([]string, n)
	for i := range n {
		img := filepath.Join(dir, fmt.Sprintf("img%d.raw", i))
		randomImage(t, img, 16<<20, uint64(i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if out, errs2, code := e.run("backup", "--image", img, "--lock-wait", "1m"); code != 0 {
				errs[i] = fmt.Sprintf("exit %d: %s%s", code, out, errs2)
			}
		}()
	}
	wg.Wait()
	for i, s := range errs {
		if s != "" {
			t.Fatalf("writer %d: %s", i, s)
		}
	}
	e.ok("verify", "--read-data")
	for i := range n {
		img := filepath.Join(dir, fmt.Sprintf("img%d.raw", i))
		out := filepath.Join(dir, fmt.Sprintf("out%d.raw", i))
		e.ok("restore", "latest", "--source", img, "--to-file", out)
		if !sameFile(t, img, out) {
			t.Fatalf("image %d restored wrong", i)
		}
	}
}

// TestRepoKilled kills backup and prune processes at random points; the
// repository must then verify, and every backup that was saved must
// restore.
func TestRepoKilled(t *testing.T) {
	dir := t.TempDir()
	e := newRepoEnv(t, filepath.Join(dir, "repo"))
	e.ok("init")
	img := filepath.Join(dir, "img.raw")
	randomImage(t, img, 48<<20, 42)
	e.ok("backup", "--image", img)
	keep := filepath.Join(dir, "keep.raw")
	os.Link(img, keep)
	first := e.backups()[0].ID
	// A file tree too: its first backup must survive as well.
	src := filepath.Join(dir, "src")
	keepSrc := filepath.Join(dir, "keep-src")
	os.MkdirAll(src, 0o755)
	os.MkdirAll(keepSrc, 0o755)
	writeFiles := func(seed uint64) {
		for i := range 12 {
			name := fmt.Sprintf("f%02d", i)
			randomImage(t, filepath.Join(src, name+".new"), 4<<20, seed*100+uint64(i))
			os.Rename(filepath.Join(src, name+".new"), filepath.Join(src, name))
		}
	}
	writeFiles(1)
	e.ok("backup", src)
	var firstFiles string
	for _, b := range e.backups() {
		if b.Kind == "files" {
			firstFiles = b.ID
		}
	}
	for _, de := range mustReadDir(t, src) {
		os.Link(filepath.Join(src, de.Name()), filepath.Join(keepSrc, de.Name()))
	}
	rng := mrand.New(mrand.NewPCG(7, 7))
	for round := range 12 {
		// Change the image and the files so that backups write new data.
		randomImage(t, img+".new", 48<<20, uint64(100+round))
		os.Rename(img+".new", img)
		writeFiles(uint64(10 + round))
		args := []string{"backup", "--image", img}
		if round%4 == 2 {
			args = []string{"backup", src}
		}
		if round%2 == 1 {
			if bs := e.backups(); len(bs) > 2 { // never the first two
				e.ok("forget", bs[len(bs)-1].ID)
			}
			args = []string{"prune", "--max-unused", "1"}
		}
		cmd := e.command(args...)
		var outb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &outb, &outb
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		delay := time.Duration(300+rng.IntN(1200)) * time.Millisecond
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
			t.Logf("round %d: %s finished before the kill (%v)", round, args[0], delay)
		case <-time.After(delay):
			cmd.Process.Signal(syscall.SIGKILL)
			<-done
			t.Logf("round %d: killed %s after %v", round, args[0], delay)
		}
		out, errs, code := e.run("verify", "--read-data")
		if code != 0 {
			t.Fatalf("round %d: verify after killing %s: exit %d\n%s%s", round, args[0], code, out, errs)
		}
	}
	e.ok("prune")
	out, _, _ := e.run("verify", "--read-data")
	if strings.Contains(out, "in no index") {
		t.Fatalf("prune left leftovers:\n%s", out)
	}
	restored := filepath.Join(dir, "first.raw")
	e.ok("restore", first, "--to-file", restored)
	if !sameFile(t, keep, restored) {
		t.Fatal("the first backup no longer restores its image")
	}
	target := filepath.Join(dir, "first-files")
	e.ok("restore", firstFiles, "--target", target)
	for _, de := range mustReadDir(t, keepSrc) {
		if !sameFile(t, filepath.Join(keepSrc, de.Name()), filepath.Join(target, "src", de.Name())) {
			t.Fatalf("the first file backup no longer restores %s", de.Name())
		}
	}
}

// biggestPack returns the largest pack file of a local repository.
func biggestPack(t testing.TB, repo string) string {
	t.Helper()
	var biggest string
	var size int64
	filepath.Walk(filepath.Join(repo, "data"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() && fi.Size() > size {
			biggest, size = p, fi.Size()
		}
		return nil
	})
	if biggest == "" {
		t.Fatalf("no pack in %s", repo)
	}
	return biggest
}

func mustReadDir(t testing.TB, dir string) []os.DirEntry {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil || len(des) == 0 {
		t.Fatalf("reading %s: %d entries, %v", dir, len(des), err)
	}
	return des
}

func TestRepoBitFlipExit7(t *testing.T) {
	dir := t.TempDir()
	e := newRepoEnv(t, filepath.Join(dir, "repo"))
	e.ok("init")
	img := filepath.Join(dir, "img.raw")
	randomImage(t, img, 8<<20, 5)
	e.ok("backup", "--image", img)
	id := e.backups()[0].ID
	biggest := biggestPack(t, e.repo)
	b, _ := os.ReadFile(biggest)
	b[len(b)/3] ^= 1
	os.WriteFile(biggest, b, 0o600)
	out, _, code := e.run("verify")
	if code != 0 {
		t.Fatalf("structure check should not read data: exit %d\n%s", code, out)
	}
	out, _, code = e.run("verify", "--read-data")
	if code != 7 || !strings.Contains(out, id) || !strings.Contains(out, "CRC32C mismatch") {
		t.Fatalf("verify --read-data: exit %d\n%s", code, out)
	}
	out, _, code = e.run("verify", id[:8])
	if code != 7 {
		t.Fatalf("verify of the backup: exit %d\n%s", code, out)
	}
	e.fails(7, "CRC32C mismatch", "restore", id, "--to-file", filepath.Join(dir, "out.raw"))
	if _, err := os.Stat(filepath.Join(dir, "out.raw")); err == nil {
		t.Fatal("a failed restore left the output file")
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".out.raw*")); len(left) != 0 {
		t.Fatalf("a failed restore left %v", left)
	}
}

func TestRepoRestoreDiskFull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test mounts a small tmpfs and needs root (CI runs as root)")
	}
	dir := t.TempDir()
	e := newRepoEnv(t, filepath.Join(dir, "repo"))
	e.ok("init")
	img := filepath.Join(dir, "img.raw")
	f, _ := os.Create(img)
	buf := make([]byte, 8<<20)
	rand.Read(buf)
	f.Write(buf)
	f.Close()
	e.ok("backup", "--image", img)
	small := filepath.Join(dir, "small")
	os.Mkdir(small, 0o755)
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", small).CombinedOutput(); err != nil {
		t.Fatalf("mount tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", small).Run()
	e.fails(1, "disk is full", "restore", "latest", "--to-file", filepath.Join(small, "out.raw"))
	if entries, _ := os.ReadDir(small); len(entries) != 0 {
		t.Fatalf("a failed restore left %v", entries)
	}
}

func TestRepoS3CLI(t *testing.T) {
	srv := testenv.StartS3(t)
	loc := "s3:http://" + srv.Endpoint + "/" + srv.Bucket + "/cli"
	e := newRepoEnv(t, loc, "AWS_ACCESS_KEY_ID="+srv.AccessKey, "AWS_SECRET_ACCESS_KEY="+srv.SecretKey)
	e.ok("init")
	dir := t.TempDir()
	img := filepath.Join(dir, "img.raw")
	randomImage(t, img, 8<<20, 9)
	e.ok("backup", "--image", img)
	out := filepath.Join(dir, "out.raw")
	e.ok("restore", "latest", "--to-file", out)
	if !sameFile(t, img, out) {
		t.Fatal("restore from S3 differs")
	}
	e.ok("verify", "--read-data")
	bad := newRepoEnv(t, loc, "AWS_ACCESS_KEY_ID="+srv.AccessKey, "AWS_SECRET_ACCESS_KEY=wrong-secret")
	_, errs, code := bad.run("backups", "--s3-connections", "1")
	if code == 0 || !strings.Contains(strings.ToLower(errs), "access") && !strings.Contains(strings.ToLower(errs), "signature") && !strings.Contains(strings.ToLower(errs), "denied") {
		t.Fatalf("refused credentials: exit %d %s", code, errs)
	}
	t.Logf("refused credentials: %s", errs)
}

// TestRepoS3ReadOnly reads a repository in S3 with credentials that may
// only read it: a second S3 user whom the bucket's policy allows to list
// and get objects. restore, verify and stats work with --no-lock and say
// so without it; a backup is refused, and nothing is written.
func TestRepoS3ReadOnly(t *testing.T) {
	srv := testenv.StartS3(t)
	loc := "s3:http://" + srv.Endpoint + "/" + srv.Bucket + "/ro"
	dir := t.TempDir()
	e := newRepoEnv(t, loc, "AWS_ACCESS_KEY_ID="+srv.AccessKey, "AWS_SECRET_ACCESS_KEY="+srv.SecretKey,
		"XDG_CACHE_HOME="+filepath.Join(dir, "cache-owner"))
	e.ok("init")
	img := filepath.Join(dir, "img.raw")
	randomImage(t, img, 8<<20, 11)
	e.ok("backup", "--image", img)

	access, secret := srv.AddReadOnlyUser(t)
	before := srv.ListObjects(t, "ro/")
	r := newRepoEnv(t, loc, "AWS_ACCESS_KEY_ID="+access, "AWS_SECRET_ACCESS_KEY="+secret,
		"XDG_CACHE_HOME="+filepath.Join(dir, "cache-reader"))
	out := filepath.Join(dir, "out.raw")
	r.fails(6, "restore only reads the repository: run it with --no-lock", "restore", "latest", "--to-file", out)
	if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused restore left %s: %v", out, err)
	}
	r.ok("restore", "latest", "--to-file", out, "--no-lock")
	if !sameFile(t, img, out) {
		t.Fatal("restore with read-only credentials differs")
	}
	if got := r.ok("verify", "--read-data", "--no-lock"); !strings.HasPrefix(got, "checked 1 backup, ") || !strings.Contains(got, "no problems found") {
		t.Fatalf("verify --no-lock:\n%s", got)
	}
	r.ok("stats", "--no-lock")
	r.fails(6, "refused the credentials (AccessDenied)", "backup", "--image", img)
	r.fails(6, "refused the credentials (AccessDenied)", "forget", e.backups()[0].ID, "--prune")
	if after := srv.ListObjects(t, "ro/"); !slices.Equal(before, after) {
		t.Fatalf("the read-only user changed the repository:\nbefore %v\nafter  %v", before, after)
	}
}

// TestRepoExport serves an image backup over NBD straight from the
// repository and reads it with libnbd's and QEMU's tools.
func TestRepoExport(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "nbdinfo", "nbdcopy")
	dir := t.TempDir()
	e := newRepoEnv(t, filepath.Join(dir, "repo"))
	e.ok("init")
	img := filepath.Join(dir, "disk.raw")
	randomImage(t, img, 40<<20, 9)
	e.ok("backup", "--image", img)
	id := e.backups()[0].ID
	port := testenv.FreePort(t)
	cmd := e.command("export", id[:8], "--listen", fmt.Sprintf("127.0.0.1:%d", port))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("export printed nothing: %v\n%s", err, errb.String())
	}
	uri := fmt.Sprintf("nbd://127.0.0.1:%d/%s", port, id)
	if !strings.Contains(line, uri) {
		t.Fatalf("export says %q, want the URI %s", line, uri)
	}
	if got := testenv.NBDSize(t, uri); got != 40<<20 {
		t.Fatalf("nbdinfo size %d", got)
	}
	runTool(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", img, uri)
	out := filepath.Join(dir, "copy.raw")
	runTool(t, "nbdcopy", uri, out)
	if !sameFile(t, img, out) {
		t.Fatal("nbdcopy of the export differs from the image")
	}
	if m := runTool(t, "nbdinfo", "--map", uri); !strings.Contains(m, "hole") || !strings.Contains(m, "data") {
		t.Fatalf("nbdinfo --map shows no holes and data:\n%s", m)
	}
	if _, err := exec.Command("qemu-io", "-f", "raw", "-c", "write 0 4k", uri).CombinedOutput(); err == nil {
		t.Fatal("a write to the read-only export succeeded")
	}
	runTool(t, "qemu-img", "compare", "-q", "-f", "raw", "-F", "raw", img, uri)
	cmd.Process.Signal(syscall.SIGINT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("export after SIGINT: %v\n%s", err, errb.String())
	}

	// A file backup is not an image.
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "f"), []byte("x"), 0o644)
	e.ok("backup", src)
	e.fails(2, "not a disk image", "export", "latest", "--listen", "127.0.0.1:0")
}

// TestRepoFiles copies files out of a partitioned ext4 disk image backup
// without restoring it.
func TestRepoFiles(t *testing.T) {
	dir := t.TempDir()
	src, disk := ext4Disk(t, dir)

	e := newRepoEnv(t, filepath.Join(dir, "repo"))
	e.ok("init")
	e.ok("backup", "--image", disk)
	if ls := e.ok("files", "latest", "--list", "/etc"); !strings.Contains(ls, "hosts.link -> hosts") || !strings.Contains(ls, " ssh\n") {
		t.Fatalf("files --list /etc:\n%s", ls)
	}
	target := filepath.Join(dir, "out")
	e.ok("files", "latest", "--include", "/etc", "--include", "/big.bin", "--target", target)
	for _, p := range []string{"etc/hosts", "etc/ssh/sshd_config", "big.bin"} {
		if !sameFile(t, filepath.Join(src, p), filepath.Join(target, p)) {
			t.Fatalf("%s differs after files", p)
		}
	}
	if l, err := os.Readlink(filepath.Join(target, "etc", "hosts.link")); err != nil || l != "hosts" {
		t.Fatalf("symlink: %q %v", l, err)
	}
	if st, _ := os.Stat(filepath.Join(target, "etc", "ssh", "sshd_config")); st == nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("mode of sshd_config: %v", st)
	}
	e.fails(3, "", "files", "latest", "--include", "/no/such/file", "--target", filepath.Join(dir, "out2"))
	e.fails(3, "no partition 7", "files", "latest", "--partition", "7", "--list", "/")
	e.fails(2, "give --include", "files", "latest", "--target", target)
}

// ext4Disk makes in dir a 64 MiB raw disk with a GPT and an ext4 partition
// holding a small tree (returned as src, its source directory).
func ext4Disk(t testing.TB, dir string) (src, disk string) {
	t.Helper()
	testenv.RequireTool(t, "mkfs.ext4", "sfdisk")
	src = filepath.Join(dir, "src")
	os.MkdirAll(filepath.Join(src, "etc", "ssh"), 0o755)
	os.WriteFile(filepath.Join(src, "etc", "hosts"), []byte("127.0.0.1 localhost\n"), 0o644)
	os.WriteFile(filepath.Join(src, "etc", "ssh", "sshd_config"), []byte("Port 22\n"), 0o600)
	os.Symlink("hosts", filepath.Join(src, "etc", "hosts.link"))
	big := make([]byte, 3<<20+17)
	rand.Read(big)
	os.WriteFile(filepath.Join(src, "big.bin"), big, 0o640)
	disk = filepath.Join(dir, "disk.raw")
	f, err := os.Create(disk)
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(64 << 20)
	f.Close()
	cmd := exec.Command("sfdisk", "-q", disk)
	cmd.Stdin = strings.NewReader("label: gpt\nstart=2048, size=40M, type=linux\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v\n%s", err, out)
	}
	runTool(t, "mkfs.ext4", "-q", "-F", "-E", "offset=1048576", "-d", src, disk, "40M")
	return src, disk
}

// An image that a QEMU process holds writable (a running VM) is not backed
// up unless asked to, and while cairn reads an image QEMU cannot write it.
func TestRepoBackupInUse(t *testing.T) {
	testenv.RequireTool(t, "qemu-img", "qemu-io", "qemu-storage-daemon")
	dir, err := os.MkdirTemp("", "cr") // short: the daemon's QMP socket lives here
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	e := newRepoEnv(t, filepath.Join(dir, "repo"))
	e.ok("init")
	img := filepath.Join(dir, "vm.qcow2")
	runTool(t, "qemu-img", "create", "-q", "-f", "qcow2", img, "64M")
	runTool(t, "qemu-io", "-c", "write -P 0x61 0 48M", img)

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	sd, err := qemu.StartStorageDaemon(ctx, qemu.DaemonConfig{Image: img, RunDir: dir, ID: "vm", ExportName: "vm"})
	if err != nil {
		t.Fatal(err)
	}
	e.fails(4, "vm.qcow2 is in use: another process", "backup", "--image", img)
	if bs := e.backups(); len(bs) != 0 {
		t.Fatalf("a refused backup left %d backups", len(bs))
	}
	e.ok("backup", "--image", img, "--force-share")
	e.fails(2, "--force-share needs --image", "backup", dir, "--force-share")
	if err := sd.Stop(ctx); err != nil {
		t.Fatal(err)
	}

	// A backup in progress keeps writers out: stopped while it holds its
	// locks (seen in /proc/locks), qemu-io gets QEMU's refusal.
	raw := filepath.Join(dir, "big.raw")
	randomFile(t, raw, 256<<20)
	var st syscall.Stat_t
	if err := syscall.Stat(raw, &st); err != nil {
		t.Fatal(err)
	}
	cmd, stderr := e.startUntil("the backup holds QEMU's locks on the image", func() bool { return holdsLock(t, st.Ino, 201) },
		"backup", "--image", raw)
	cmd.Process.Signal(syscall.SIGSTOP)
	out, werr := exec.Command("qemu-io", "-f", "raw", "-c", "write -P 0x62 0 4k", raw).CombinedOutput()
	cmd.Process.Signal(syscall.SIGCONT)
	if err := cmd.Wait(); err != nil {
		t.Fatalf("backup: %v\n%s", err, stderr.String())
	}
	if werr == nil || !strings.Contains(string(out), `Failed to get "write" lock`) {
		t.Fatalf("qemu-io wrote while the backup ran (%v):\n%s", werr, out)
	}
	runTool(t, "qemu-io", "-f", "raw", "-c", "write -P 0x62 0 4k", raw) // and can write again after
	if bs := e.backups(); len(bs) != 2 {
		t.Fatalf("%d backups, want 2", len(bs))
	}
}

// randomFile writes size random bytes to path.
func randomFile(t testing.TB, path string, size int) {
	t.Helper()
	b := make([]byte, size)
	rand.Read(b)
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
}

// holdsLock reports whether /proc/locks shows a lock on byte off of the
// file with inode ino (on any device).
func holdsLock(t testing.TB, ino uint64, off int) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	// "1: OFDLCK ADVISORY  READ -1 fe:00:10027739 201 201"
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 8 && strings.HasSuffix(f[5], fmt.Sprintf(":%d", ino)) && f[6] == fmt.Sprint(off) {
			return true
		}
	}
	return false
}

// A file backup that could not read some entries is saved, names them, and
// exits 1, so that a script notices; the entries are left out of it.
func TestRepoBackupIncomplete(t *testing.T) {
	dir, err := os.MkdirTemp("", "cr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "open.txt"), []byte("anyone may read this\n"), 0o644)
	secret := filepath.Join(src, "secret.txt")
	os.WriteFile(secret, []byte("only root\n"), 0o600)
	os.Chmod(secret, 0) // unreadable by its owner too, unless root
	e := newRepoEnv(t, filepath.Join(dir, "repo"), "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	if os.Geteuid() == 0 {
		// root reads everything: run cairn as nobody, in a tree it may use.
		os.Chmod(dir, 0o777)
		e.asNobody(dir)
	}
	e.ok("init")
	_, errs, code := e.run("backup", src)
	if code != 1 || !strings.Contains(errs, "cairn: warning: not backed up: "+secret+": opening: ") ||
		!strings.Contains(errs, "is saved without 1 entry that could not be read") {
		t.Fatalf("backup with an unreadable file: exit %d (want 1), stderr:\n%s", code, errs)
	}
	bs := e.backups()
	if len(bs) != 1 || bs[0].SkippedEntries != 1 {
		t.Fatalf("backups %+v, want the incomplete one with skipped_entries 1", bs)
	}
	if out := e.ok("backups"); !strings.Contains(out, "backup "+bs[0].ID[:8]+" is incomplete: saved without 1 entry that could not be read") {
		t.Fatalf("backups does not mark the incomplete backup:\n%s", out)
	}
	ls := e.ok("ls", bs[0].ID)
	if !strings.Contains(ls, "open.txt") || strings.Contains(ls, "secret.txt") {
		t.Fatalf("ls of the incomplete backup:\n%s", ls)
	}
	os.Chmod(secret, 0o644)
	if _, errs, code := e.run("backup", src); code != 0 {
		t.Fatalf("backup once readable: exit %d\n%s", code, errs)
	}
	if bs := e.backups(); len(bs) != 2 || bs[1].SkippedEntries != 0 {
		t.Fatalf("backups %+v, want the second one complete", bs)
	}
	if out := e.ok("backups"); strings.Count(out, "is incomplete") != 1 {
		t.Fatalf("backups marks %d backups incomplete, want 1:\n%s", strings.Count(out, "is incomplete"), out)
	}
}

// Ctrl-C stops a restore: exit 130, "interrupted by SIGINT", and neither
// the target nor the temporary file beside it is left.
func TestRepoInterrupted(t *testing.T) {
	dir := t.TempDir()
	e := newRepoEnv(t, filepath.Join(dir, "repo"))
	e.ok("init")
	img := filepath.Join(dir, "disk.raw")
	randomFile(t, img, 256<<20)
	e.ok("backup", "--image", img)
	outDir := filepath.Join(dir, "out")
	os.Mkdir(outDir, 0o755)
	cmd, stderr := e.startUntil("the restore writes its temporary file", func() bool {
		names, _ := filepath.Glob(filepath.Join(outDir, ".disk.raw.cairn-restore-*"))
		return len(names) > 0
	}, "restore", "latest", "--to-file", filepath.Join(outDir, "disk.raw"))
	cmd.Process.Signal(syscall.SIGINT)
	err := cmd.Wait()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 || stderr.String() != "cairn: interrupted by SIGINT\n" {
		t.Fatalf("restore after SIGINT: %v, stderr %q; want exit 130 and the interruption", err, stderr.String())
	}
	if names, _ := filepath.Glob(filepath.Join(outDir, "*")); len(names) != 0 {
		t.Fatalf("an interrupted restore left %q", names)
	}
	if names, _ := filepath.Glob(filepath.Join(outDir, ".*")); len(names) != 0 {
		t.Fatalf("an interrupted restore left %q", names)
	}
}

// A repository that cannot be written (a read-only disk, read-only
// credentials) is still restored from, verified and measured with
// --no-lock; without it the lock's failure says so.
func TestRepoReadOnly(t *testing.T) {
	dir, err := os.MkdirTemp("", "cr")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		filepath.Walk(dir, func(p string, _ os.FileInfo, _ error) error { return os.Chmod(p, 0o700) })
		os.RemoveAll(dir)
	})
	os.Chmod(dir, 0o755)
	repoDir := filepath.Join(dir, "repo")
	e := newRepoEnv(t, repoDir, "XDG_CACHE_HOME="+filepath.Join(dir, "cache"))
	e.ok("init")
	src := filepath.Join(dir, "src")
	os.MkdirAll(src, 0o755)
	os.WriteFile(filepath.Join(src, "f.txt"), []byte("kept safe\n"), 0o644)
	e.ok("backup", src)

	// Readable, not writable: for root, by running cairn as nobody.
	if os.Geteuid() == 0 {
		e.asNobody(dir)
		for _, d := range []string{"cache", "out"} {
			os.Mkdir(filepath.Join(dir, d), 0o777)
			os.Chmod(filepath.Join(dir, d), 0o777) // past the umask
		}
	} else {
		os.Mkdir(filepath.Join(dir, "out"), 0o755)
	}
	filepath.Walk(repoDir, func(p string, fi os.FileInfo, err error) error {
		if err == nil {
			if fi.IsDir() {
				os.Chmod(p, 0o555)
			} else {
				os.Chmod(p, 0o444)
			}
		}
		return nil
	})
	target := filepath.Join(dir, "out", "t")
	e.fails(1, "restore only reads the repository: run it with --no-lock", "restore", "latest", "--target", target)
	e.ok("restore", "latest", "--target", target, "--no-lock")
	if !sameFile(t, filepath.Join(src, "f.txt"), filepath.Join(target, "src", "f.txt")) {
		t.Fatal("restored file differs")
	}
	if out := e.ok("verify", "--read-data", "--no-lock"); !strings.Contains(out, "no problems found") {
		t.Fatalf("verify --no-lock:\n%s", out)
	}
	e.ok("stats", "--no-lock")
	e.fails(2, "unknown flag: --no-lock", "backup", src, "--no-lock")
	e.fails(1, "saving lock", "backup", src)
}

// A local repository inside the backed-up tree is left out of it, with a
// note; backing up the repository itself is refused.
func TestRepoNotIntoItself(t *testing.T) {
	dir := t.TempDir()
	tree := filepath.Join(dir, "srv")
	os.MkdirAll(filepath.Join(tree, "www"), 0o755)
	os.WriteFile(filepath.Join(tree, "www", "index.html"), []byte("<p>hi</p>\n"), 0o644)
	e := newRepoEnv(t, filepath.Join(tree, "backup-repo"))
	e.ok("init")
	_, errs, code := e.run("backup", tree)
	if code != 0 || !strings.Contains(errs, "cairn: note: the repository "+filepath.Join(tree, "backup-repo")+" is left out of the backup") {
		t.Fatalf("backup of the tree holding the repository: exit %d\n%s", code, errs)
	}
	if ls := e.ok("ls", "latest"); strings.Contains(ls, "backup-repo") || !strings.Contains(ls, "srv/www/index.html") {
		t.Fatalf("ls:\n%s", ls)
	}
	e.fails(2, "is the repository: a repository is not backed up into itself", "backup", filepath.Join(tree, "backup-repo"))
	if bs := e.backups(); len(bs) != 1 {
		t.Fatalf("%d backups, want 1", len(bs))
	}
}
