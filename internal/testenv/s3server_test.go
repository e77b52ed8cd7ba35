package testenv

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"
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
