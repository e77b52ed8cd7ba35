package testenv

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// The harness itself: both servers answer, hold the test bucket (a
// directory of the posix backend) and accept more buckets.
func TestStartS3(t *testing.T) {
	for _, start := range []func(testing.TB) *S3Server{StartS3, StartS3TLS} {
		srv := start(t)
		scheme := "http"
		if srv.Secure() {
			scheme = "https"
		}
		resp, err := (&http.Client{Transport: srv.Transport()}).Get(scheme + "://" + srv.Endpoint + "/health")
		if err != nil {
			t.Fatalf("%s health: %v", scheme, err)
		}
		resp.Body.Close()
		if fi, err := os.Stat(filepath.Join(srv.Dir, srv.Bucket)); err != nil || !fi.IsDir() {
			t.Fatalf("%s: the bucket is not a directory of the posix root: %v", scheme, err)
		}
		if err := srv.MakeBucket(context.Background(), "second"); err != nil {
			t.Fatalf("%s: MakeBucket: %v", scheme, err)
		}
	}
}

// The read-only user lists and reads what the root account wrote, and its
// writes and deletes are refused with AccessDenied.
func TestAddReadOnlyUser(t *testing.T) {
	srv := StartS3(t)
	ctx := context.Background()
	root, err := srv.client()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := root.PutObject(ctx, srv.Bucket, "d/x", strings.NewReader("kept"), 4, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	access, secret := srv.AddReadOnlyUser(t)
	ro, err := minio.New(srv.Endpoint, &minio.Options{Creds: credentials.NewStaticV4(access, secret, ""),
		BucketLookup: minio.BucketLookupPath, Region: "us-east-1"})
	if err != nil {
		t.Fatal(err)
	}
	o, err := ro.GetObject(ctx, srv.Bucket, "d/x", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if b, err := io.ReadAll(o); err != nil || string(b) != "kept" {
		t.Fatalf("the read-only user reads %q, %v", b, err)
	}
	var listed []string
	for obj := range ro.ListObjects(ctx, srv.Bucket, minio.ListObjectsOptions{Prefix: "d/", Recursive: true}) {
		if obj.Err != nil {
			t.Fatalf("the read-only user cannot list: %v", obj.Err)
		}
		listed = append(listed, obj.Key)
	}
	if len(listed) != 1 || listed[0] != "d/x" {
		t.Fatalf("the read-only user lists %v", listed)
	}
	_, err = ro.PutObject(ctx, srv.Bucket, "d/y", strings.NewReader("new"), 3, minio.PutObjectOptions{})
	if code := minio.ToErrorResponse(err).Code; code != "AccessDenied" {
		t.Fatalf("a write by the read-only user: %v (code %q), want AccessDenied", err, code)
	}
	err = ro.RemoveObject(ctx, srv.Bucket, "d/x", minio.RemoveObjectOptions{})
	if code := minio.ToErrorResponse(err).Code; code != "AccessDenied" {
		t.Fatalf("a delete by the read-only user: %v (code %q), want AccessDenied", err, code)
	}
	if got := srv.ListObjects(t, "d/"); len(got) != 1 || got[0] != "d/x" {
		t.Fatalf("after the refused writes the bucket holds %v", got)
	}
}
