package location_test

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/blob/location"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/testenv"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		in   string
		kind location.Kind
		rest string
	}{
		{"/srv/repo", location.Local, "/srv/repo"},
		{"repo", location.Local, "repo"},
		{"./odd:name", location.Local, "./odd:name"},
		{"file:///srv/repo", location.Local, "/srv/repo"},
		{"mem:", location.Memory, ""},
		{"s3:http://127.0.0.1:9000/bkt/p", location.S3, "s3:http://127.0.0.1:9000/bkt/p"},
		{"s3:https://s3.example.com/bkt", location.S3, "s3:https://s3.example.com/bkt"},
	} {
		kind, rest, err := location.Parse(c.in)
		if err != nil || kind != c.kind || rest != c.rest {
			t.Errorf("Parse(%q) = %q, %q, %v; want %q, %q", c.in, kind, rest, err, c.kind, c.rest)
		}
	}
	for _, bad := range []string{"", "sftp:host:/x", "file://relative", "s3:http://host", "rclone:remote"} {
		if _, _, err := location.Parse(bad); core.KindOf(err) != core.KindInvalid {
			t.Errorf("Parse(%q) = %v; want kind Invalid", bad, err)
		}
	}
}

func roundTrip(t *testing.T, s blob.Store) {
	t.Helper()
	ctx := context.Background()
	if err := blob.SaveBytes(ctx, s, "config", []byte("hello")); err != nil {
		t.Fatal(err)
	}
	got, err := blob.LoadAll(ctx, s, "config")
	if err != nil || string(got) != "hello" {
		t.Fatalf("LoadAll = %q, %v", got, err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestOpen(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "repo")
	if _, err := location.Open(ctx, dir, location.Options{}); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("Open of a missing directory without Create: %v", err)
	}
	s, err := location.Open(ctx, dir, location.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s)
	s, err = location.Open(ctx, "file://"+dir, location.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := blob.LoadAll(ctx, s, "config"); err != nil || string(got) != "hello" {
		t.Fatalf("file:// reopened: %q, %v", got, err)
	}
	s, err = location.Open(ctx, "mem:", location.Options{})
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s)

	srv := testenv.StartS3(t)
	loc := "s3:http://" + srv.Endpoint + "/fresh-bucket/some/prefix"
	opts := location.Options{AccessKey: srv.AccessKey, SecretKey: srv.SecretKey}
	if _, err := location.Open(ctx, loc, opts); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("Open of a missing bucket without Create: %v", err)
	}
	opts.Create = true
	s, err = location.Open(ctx, loc, opts)
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, s)
}
