package repo

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/blob/local"
	"github.com/cairn-backup/cairn/internal/filebackup"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

var update = flag.Bool("update", false, "rewrite testdata/repo-v1 (a format change: needs a new version)")

// vectorExpect is testdata/repo-v1.json: what the committed repository holds.
type vectorExpect struct {
	Password string            `json:"password"`
	Image    string            `json:"image_sha256"` // of the restored raw image
	Files    map[string]string `json:"files_sha256"` // path -> sha256 of the restored file
}

// TestFormatVectorsV1 reads a repository written by format version 1 and
// committed under testdata/repo-v1: an image backup and a file backup must
// restore to the recorded bytes, and verify must pass. If this test fails
// after a change, the change broke the format.
func TestFormatVectorsV1(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join("testdata", "repo-v1")
	if *update {
		writeVectors(t, dir)
	}
	var want vectorExpect
	b, err := os.ReadFile(filepath.Join("testdata", "repo-v1.json"))
	if err != nil {
		t.Fatal(err)
	}
	json.Unmarshal(b, &want)
	store, err := local.Open(dir, false)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Open(ctx, store, []byte(want.Password), testOptions())
	if err != nil {
		t.Fatal(err)
	}
	if err := r.LoadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	backups, err := r.Backups(ctx)
	if err != nil || len(backups) != 2 {
		t.Fatalf("backups: %d %v", len(backups), err)
	}
	for _, m := range backups {
		switch m.Kind {
		case format.KindImage:
			got, err := restoreBytes(t, r, m)
			if err != nil {
				t.Fatal(err)
			}
			if s := sha(got); s != want.Image {
				t.Fatalf("image restores to %s, want %s", s, want.Image)
			}
		case format.KindFiles:
			target := t.TempDir()
			if _, err := r.RestoreFiles(ctx, m, target, filebackup.RestoreOptions{}); err != nil {
				t.Fatal(err)
			}
			got := hashTree(t, target)
			if len(got) != len(want.Files) {
				t.Fatalf("restored %v, want %v", got, want.Files)
			}
			for p, s := range want.Files {
				if got[p] != s {
					t.Fatalf("%s restores to %s, want %s", p, got[p], s)
				}
			}
		}
	}
	v, err := r.Verify(ctx, VerifyOptions{ReadDataPercent: 100})
	if err != nil || !v.OK() {
		t.Fatalf("verify: %+v %v", v, err)
	}
}

func sha(b []byte) string { s := sha256.Sum256(b); return hex.EncodeToString(s[:]) }

func hashTree(t testing.TB, root string) map[string]string {
	out := map[string]string{}
	filepath.Walk(root, func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			b, _ := os.ReadFile(p)
			rel, _ := filepath.Rel(root, p)
			out[rel] = sha(b)
		}
		return nil
	})
	return out
}

func writeVectors(t *testing.T, dir string) {
	ctx := context.Background()
	os.RemoveAll(dir)
	store, err := local.Open(dir, true)
	if err != nil {
		t.Fatal(err)
	}
	const pw = "correct horse"
	r, err := Init(ctx, store, []byte(pw), InitOptions{ImageChunkSize: 64 << 10, SegmentChunks: 4}, testOptions())
	if err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	img := filepath.Join(tmp, "disk.raw")
	image := writeImage(t, img, 700<<10+123, 2026)
	src, done := rawSource(t, img)
	src.Path = "/srv/disk.raw"
	when := time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)
	if _, err := r.BackupImage(ctx, src, BackupInfo{Host: "vectors", Tags: []string{"volume=disk"}, Time: when}, nil); err != nil {
		t.Fatal(err)
	}
	done()
	files := filepath.Join(tmp, "files")
	os.MkdirAll(filepath.Join(files, "etc"), 0o755)
	os.WriteFile(filepath.Join(files, "etc", "hostname"), []byte("vectors\n"), 0o644)
	os.WriteFile(filepath.Join(files, "big.bin"), image[:600<<10], 0o600)
	os.Symlink("etc/hostname", filepath.Join(files, "link"))
	if _, err := r.BackupFiles(ctx, []string{files}, BackupInfo{Host: "vectors", Time: when.Add(time.Hour)}, filebackup.BackupOptions{}); err != nil {
		t.Fatal(err)
	}
	exp := vectorExpect{Password: pw, Image: sha(image), Files: map[string]string{}}
	for p, s := range hashTree(t, files) {
		exp.Files[filepath.Join("files", p)] = s
	}
	keys := make([]string, 0)
	for k := range exp.Files {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	b, _ := json.MarshalIndent(exp, "", "  ")
	os.WriteFile(filepath.Join("testdata", "repo-v1.json"), append(b, '\n'), 0o644)
}
