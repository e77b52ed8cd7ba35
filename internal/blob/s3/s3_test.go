package s3_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/blob/blobtest"
	"github.com/cairn-backup/cairn/internal/blob/s3"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// startServer starts a versitygw for one test (it starts in well under a
// second).
func startServer(t *testing.T) *testenv.S3Server {
	t.Helper()
	return testenv.StartS3(t)
}

var prefixCounter atomic.Int64

func config(srv *testenv.S3Server, prefix string) s3.Config {
	return s3.Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Prefix: prefix,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: "us-east-1"}
}

func openStore(t *testing.T, cfg s3.Config) *s3.Store {
	t.Helper()
	s, err := s3.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("s3.Open %s: %v", cfg.Location(), err)
	}
	return s
}

// TestConformance runs the suite on the real server, each subtest under
// its own prefix of one bucket.
func TestConformance(t *testing.T) {
	srv := startServer(t)
	blobtest.Run(t, func(t *testing.T) blob.Store {
		return openStore(t, config(srv, fmt.Sprintf("conf/%d", prefixCounter.Add(1))))
	})
}

// TestConformanceNoPrefix uses a bucket of its own, with objects at the
// bucket's root, and the region left to discovery.
func TestConformanceNoPrefix(t *testing.T) {
	srv := startServer(t)
	blobtest.Run(t, func(t *testing.T) blob.Store {
		cfg := config(srv, "")
		cfg.Bucket = fmt.Sprintf("root-%d", prefixCounter.Add(1))
		cfg.Region = ""
		cfg.CreateBucket = true
		return openStore(t, cfg)
	})
}

// TestConformanceTLS runs the suite over https, where the payload is not
// signed and Content-MD5 is what makes a cut upload fail.
func TestConformanceTLS(t *testing.T) {
	srv := testenv.StartS3TLS(t)
	blobtest.Run(t, func(t *testing.T) blob.Store {
		cfg := config(srv, fmt.Sprintf("tls/%d", prefixCounter.Add(1)))
		cfg.Secure = true
		cfg.Transport = srv.Transport()
		return openStore(t, cfg)
	})
}

// flakyProxy stands between the client and versitygw: it answers every
// failEach-th request with 503 SlowDown (without forwarding it), counts
// requests in flight, and can delay them.
type flakyProxy struct {
	srv      *httptest.Server
	n        atomic.Int64
	inFlight atomic.Int64
	maxSeen  atomic.Int64
	failEach int64
	delay    time.Duration
}

func newFlakyProxy(t *testing.T, target string, failEach int64, delay time.Duration) *flakyProxy {
	u, _ := url.Parse("http://" + target)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ErrorLog = log.New(io.Discard, "", 0) // cancelled uploads are expected
	p := &flakyProxy{failEach: failEach, delay: delay}
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cur := p.inFlight.Add(1)
		defer p.inFlight.Add(-1)
		for {
			m := p.maxSeen.Load()
			if cur <= m || p.maxSeen.CompareAndSwap(m, cur) {
				break
			}
		}
		time.Sleep(p.delay)
		if p.failEach > 0 && p.n.Add(1)%p.failEach == 0 {
			// Take the whole request first, as a server that throttles
			// after reading does (answering early makes net/http wait
			// 50 ms per request for its body write to end).
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *flakyProxy) endpoint() string { return strings.TrimPrefix(p.srv.URL, "http://") }

// The suite passes through a proxy that throttles every third request when
// the store is wrapped in blob.Retry: the S3 store classifies 503 SlowDown
// as transient and Retry hides it.
func TestConformanceThroughSlowDown(t *testing.T) {
	srv := startServer(t)
	proxy := newFlakyProxy(t, srv.Endpoint, 3, 0)
	// Enough attempts that no call meets the every-third failure every time.
	policy := blob.RetryPolicy{Attempts: 20, Initial: time.Millisecond, Max: 10 * time.Millisecond}
	blobtest.Run(t, func(t *testing.T) blob.Store {
		cfg := config(srv, fmt.Sprintf("slow/%d", prefixCounter.Add(1)))
		cfg.Endpoint = proxy.endpoint()
		var s *s3.Store
		var err error
		for range 3 { // Open itself is not retried here
			if s, err = s3.Open(context.Background(), cfg); err == nil {
				break
			}
		}
		if err != nil {
			t.Fatal(err)
		}
		return blob.Retry(s, policy)
	})
	if proxy.n.Load() < 300 {
		t.Fatalf("only %d requests went through the proxy", proxy.n.Load())
	}
}

func TestSlowDownIsTransient(t *testing.T) {
	srv := startServer(t)
	proxy := newFlakyProxy(t, srv.Endpoint, 3, 0)
	cfg := config(srv, "transient")
	cfg.Endpoint = proxy.endpoint()
	s := openStore(t, cfg)
	defer s.Close()
	proxy.failEach = 1
	_, err := s.Stat(context.Background(), "x")
	if !blob.IsTransient(err) || blob.IsNotExist(err) {
		t.Fatalf("Stat through a throttling server: %v; want a transient error", err)
	}
	err = blob.SaveBytes(context.Background(), s, "x", []byte("x"))
	if !blob.IsTransient(err) || !strings.Contains(err.Error(), "SlowDown") || !strings.Contains(err.Error(), "blob x") {
		t.Fatalf("Save through a throttling server: %v; want a transient SlowDown error naming the blob", err)
	}
	// A server that is not there: a transient network error.
	cfg.Endpoint = proxy.endpoint()
	proxy.srv.Close()
	_, err = s.Stat(context.Background(), "x")
	if !blob.IsTransient(err) {
		t.Fatalf("Stat with the server gone: %v; want transient", err)
	}
}

func TestBoundedParallelism(t *testing.T) {
	srv := startServer(t)
	proxy := newFlakyProxy(t, srv.Endpoint, 0, 20*time.Millisecond)
	cfg := config(srv, "parallel")
	cfg.Endpoint = proxy.endpoint()
	cfg.Connections = 3
	s := openStore(t, cfg)
	defer s.Close()
	ctx := context.Background()
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := blob.SaveBytes(ctx, s, fmt.Sprintf("p/%d", i), []byte("x")); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	if m := proxy.maxSeen.Load(); m != 3 {
		t.Fatalf("%d requests were in flight at once; want exactly the 3 allowed", m)
	}
	// A Load holds its slot until its reader is closed.
	var readers []interface{ Close() error }
	for i := range 3 {
		rc, err := s.Load(ctx, fmt.Sprintf("p/%d", i), 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		readers = append(readers, rc)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := s.Stat(short, "p/0"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Stat with every slot held by open readers: %v; want it to wait (deadline exceeded)", err)
	}
	readers[0].Close()
	if _, err := s.Stat(ctx, "p/0"); err != nil {
		t.Fatalf("Stat after a reader closed: %v", err)
	}
	for _, r := range readers[1:] {
		r.Close()
	}
}

func TestRefusedCredentials(t *testing.T) {
	srv := startServer(t)
	for _, c := range []struct{ name, access, secret string }{
		{"unknown key", "nobody", srv.SecretKey},
		{"wrong secret", srv.AccessKey, "wrong-secret-0123456789"},
	} {
		cfg := config(srv, "")
		cfg.AccessKey, cfg.SecretKey = c.access, c.secret
		_, err := s3.Open(context.Background(), cfg)
		if core.KindOf(err) != core.KindUnauthorized || !strings.Contains(err.Error(), "refused the credentials") {
			t.Errorf("%s: Open = %v (kind %v); want kind Unauthorized saying the credentials were refused", c.name, err, core.KindOf(err))
		}
		if blob.IsTransient(err) {
			t.Errorf("%s: refused credentials must not be retried: %v", c.name, err)
		}
	}
	// No credentials at all.
	t.Setenv("AWS_ACCESS_KEY_ID", "")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "")
	cfg := config(srv, "")
	cfg.AccessKey, cfg.SecretKey = "", ""
	if _, err := s3.Open(context.Background(), cfg); core.KindOf(err) != core.KindUnauthorized || !strings.Contains(err.Error(), "AWS_ACCESS_KEY_ID") {
		t.Errorf("Open without credentials: %v", err)
	}
	// Credentials from the environment.
	t.Setenv("AWS_ACCESS_KEY_ID", srv.AccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", srv.SecretKey)
	s, err := s3.Open(context.Background(), cfg)
	if err != nil {
		t.Fatalf("Open with credentials from the environment: %v", err)
	}
	s.Close()
}

func TestMissingBucket(t *testing.T) {
	srv := startServer(t)
	ctx := context.Background()
	cfg := config(srv, "p")
	cfg.Bucket = "no-such-bucket"
	_, err := s3.Open(ctx, cfg)
	if core.KindOf(err) != core.KindNotFound || blob.IsNotExist(err) || !strings.Contains(err.Error(), "no-such-bucket does not exist") {
		t.Fatalf("Open of a missing bucket: %v; want a clear NotFound error that is not IsNotExist", err)
	}
	cfg.Bucket = "created-by-open"
	cfg.CreateBucket = true
	s := openStore(t, cfg)
	if err := blob.SaveBytes(ctx, s, "config", []byte("c")); err != nil {
		t.Fatal(err)
	}
	s.Close()
	// Opening again with CreateBucket on an existing bucket is fine.
	s = openStore(t, cfg)
	defer s.Close()
	if got, err := blob.LoadAll(ctx, s, "config"); err != nil || string(got) != "c" {
		t.Fatalf("reopened: %q, %v", got, err)
	}
}

func TestParseLocation(t *testing.T) {
	for _, c := range []struct {
		in   string
		want s3.Config
	}{
		{"s3:http://127.0.0.1:9000/bucket", s3.Config{Endpoint: "127.0.0.1:9000", Bucket: "bucket"}},
		{"s3:https://s3.example.com/bkt/some/prefix", s3.Config{Endpoint: "s3.example.com", Secure: true, Bucket: "bkt", Prefix: "some/prefix"}},
		{"s3:https://s3.example.com/bkt/p/", s3.Config{Endpoint: "s3.example.com", Secure: true, Bucket: "bkt", Prefix: "p"}},
		{"s3:s3.amazonaws.com/my.backups-1", s3.Config{Endpoint: "s3.amazonaws.com", Secure: true, Bucket: "my.backups-1"}},
		{"s3:http://[::1]:9000/bkt/x", s3.Config{Endpoint: "[::1]:9000", Bucket: "bkt", Prefix: "x"}},
	} {
		got, err := s3.ParseLocation(c.in)
		if err != nil || got != c.want {
			t.Errorf("ParseLocation(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
		if err == nil && !strings.HasSuffix(c.in, "/") && strings.Contains(c.in, "://") && got.Location() != c.in {
			t.Errorf("Location() = %q, want %q", got.Location(), c.in)
		}
	}
	for _, bad := range []string{"s3:", "s3:http://host", "s3:http://host/", "s3:ftp://host/bkt", "s3:http://user:pw@host/bkt",
		"s3:http://host/bkt/../x", "s3:http://host/bkt//x", "s3:http://host/bkt?x=1", "file:///x",
		"s3:http://host/b", "s3:http://host/-bkt", "s3:http://host/bkt..x", "s3:http://host/" + strings.Repeat("b", 64)} {
		if _, err := s3.ParseLocation(bad); core.KindOf(err) != core.KindInvalid {
			t.Errorf("ParseLocation(%q) = %v; want kind Invalid", bad, err)
		}
	}
}

// BenchmarkSaveLoad32MiB reports the throughput of saving and loading 32 MiB
// objects on the local versitygw.
func BenchmarkSaveLoad32MiB(b *testing.B) {
	srv := testenv.StartS3(b)
	s, err := s3.Open(context.Background(), s3.Config{Endpoint: srv.Endpoint, Bucket: srv.Bucket, Prefix: "bench",
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, Region: "us-east-1"})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	blobtest.BenchmarkSaveLoad(b, s, 32<<20)
}
