package testenv

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// VersitygwInstall is the command that installs the S3 server the tests use
// (scripts/deps.sh runs it for `make test` and `make bench`).
const VersitygwInstall = "go install github.com/versity/versitygw/cmd/versitygw@v1.8.0"

// S3Server is a real S3-compatible server (versitygw with its posix backend)
// running on 127.0.0.1 for the duration of a test.
type S3Server struct {
	Endpoint  string // 127.0.0.1:PORT
	AccessKey string
	SecretKey string
	Bucket    string // created empty for the test
	Dir       string // the posix backend's root: one directory per bucket

	// TLS servers (StartS3TLS) only: the certificate authority to trust.
	CertPool *x509.CertPool
}

// Secure reports whether the server speaks https.
func (s *S3Server) Secure() bool { return s.CertPool != nil }

// Transport returns an HTTP transport that trusts the server's certificate
// (a default transport for plain http).
func (s *S3Server) Transport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	if s.CertPool != nil {
		t.TLSClientConfig = &tls.Config{RootCAs: s.CertPool, MinVersion: tls.VersionTLS12}
	}
	return t
}

// StartS3 starts versitygw on a free loopback port with a temporary root,
// waits until it answers, creates an empty bucket through the S3 API, and
// stops the server when the test ends. A missing versitygw binary fails the
// test with the command that installs it.
func StartS3(t testing.TB) *S3Server {
	t.Helper()
	return startS3(t, false)
}

// StartS3TLS is StartS3 with https, on a certificate for 127.0.0.1 made for
// the test.
func StartS3TLS(t testing.TB) *S3Server {
	t.Helper()
	return startS3(t, true)
}

func startS3(t testing.TB, withTLS bool) *S3Server {
	t.Helper()
	bin := findVersitygw(t)
	dir := t.TempDir()
	srv := &S3Server{AccessKey: "cairntest" + randomHex(4), SecretKey: randomHex(20), Bucket: "cairn-test", Dir: filepath.Join(dir, "root")}
	if err := os.Mkdir(srv.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	var certFile, keyFile string
	if withTLS {
		var err error
		certFile, keyFile, srv.CertPool, err = writeLoopbackCert(dir)
		if err != nil {
			t.Fatalf("making a certificate for versitygw: %v", err)
		}
	}
	var lastErr error
	for try := 0; try < 3; try++ { // the free port may be taken before versitygw binds it
		port := FreePort(t)
		srv.Endpoint = fmt.Sprintf("127.0.0.1:%d", port)
		lastErr = startVersitygw(t, bin, srv, certFile, keyFile)
		if lastErr == nil {
			break
		}
	}
	if lastErr != nil {
		t.Fatalf("starting versitygw: %v", lastErr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := srv.MakeBucket(ctx, srv.Bucket); err != nil {
		t.Fatalf("creating bucket %s on versitygw: %v", srv.Bucket, err)
	}
	return srv
}

// MakeBucket creates a bucket through the S3 API.
func (s *S3Server) MakeBucket(ctx context.Context, name string) error {
	c, err := s.client()
	if err != nil {
		return err
	}
	return c.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: "us-east-1"})
}

// client is an S3 client of the server's root account.
func (s *S3Server) client() (*minio.Client, error) {
	return minio.New(s.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(s.AccessKey, s.SecretKey, ""),
		Secure:       s.Secure(),
		Transport:    s.Transport(),
		BucketLookup: minio.BucketLookupPath,
		Region:       "us-east-1",
	})
}

// AddReadOnlyUser creates a second S3 user, who may list the test bucket
// and read its objects but not write or delete them (a bucket policy
// allows only that), and returns its access key and secret. An S3 server
// answers that user's writes with AccessDenied, as it answers any
// credentials limited to reading.
func (s *S3Server) AddReadOnlyUser(t testing.TB) (access, secret string) {
	t.Helper()
	if s.Secure() {
		t.Fatal("AddReadOnlyUser: only on a server started by StartS3")
	}
	access, secret = "cairnreader"+randomHex(4), randomHex(20)
	out, err := exec.Command(findVersitygw(t), "admin", "--access", s.AccessKey, "--secret", s.SecretKey,
		"--endpoint-url", "http://"+s.Endpoint, "create-user", "--access", access, "--secret", secret, "--role", "user").CombinedOutput()
	if err != nil {
		t.Fatalf("versitygw admin create-user: %v\n%s", err, out)
	}
	c, err := s.client()
	if err != nil {
		t.Fatal(err)
	}
	policy := fmt.Sprintf(`{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":[%q]},`+
		`"Action":["s3:ListBucket","s3:GetBucketLocation","s3:GetObject"],"Resource":["arn:aws:s3:::%s","arn:aws:s3:::%s/*"]}]}`,
		access, s.Bucket, s.Bucket)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.SetBucketPolicy(ctx, s.Bucket, policy); err != nil {
		t.Fatalf("setting the read-only policy on bucket %s: %v", s.Bucket, err)
	}
	return access, secret
}

// ListObjects returns the names of the objects under prefix in the test
// bucket, listed with the root account, sorted.
func (s *S3Server) ListObjects(t testing.TB, prefix string) []string {
	t.Helper()
	c, err := s.client()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var names []string
	for o := range c.ListObjects(ctx, s.Bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if o.Err != nil {
			t.Fatalf("listing bucket %s: %v", s.Bucket, o.Err)
		}
		names = append(names, o.Key)
	}
	slices.Sort(names)
	return names
}

var (
	versitygwOnce sync.Once
	versitygwPath string
	versitygwErr  error
)

// findVersitygw looks in PATH, then where `go install` puts programs
// ($(go env GOBIN), else $(go env GOPATH)/bin), then in $HOME/go/bin.
func findVersitygw(t testing.TB) string {
	t.Helper()
	versitygwOnce.Do(func() {
		if p, err := exec.LookPath("versitygw"); err == nil {
			versitygwPath = p
			return
		}
		var dirs []string
		if out, err := exec.Command("go", "env", "GOBIN").Output(); err == nil && strings.TrimSpace(string(out)) != "" {
			dirs = append(dirs, strings.TrimSpace(string(out)))
		}
		if out, err := exec.Command("go", "env", "GOPATH").Output(); err == nil {
			for _, d := range filepath.SplitList(strings.TrimSpace(string(out))) {
				dirs = append(dirs, filepath.Join(d, "bin"))
			}
		}
		if home, err := os.UserHomeDir(); err == nil {
			dirs = append(dirs, filepath.Join(home, "go", "bin"))
		}
		for _, d := range dirs {
			p := filepath.Join(d, "versitygw")
			if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
				versitygwPath = p
				return
			}
		}
		versitygwErr = fmt.Errorf("versitygw not found in PATH nor in %s", strings.Join(dirs, ", "))
	})
	if versitygwErr != nil {
		t.Fatalf("%v: run `make test` (scripts/deps.sh installs it) or `%s`", versitygwErr, VersitygwInstall)
	}
	return versitygwPath
}

// startVersitygw runs the server and waits for its health endpoint. It
// registers the cleanup that stops it.
func startVersitygw(t testing.TB, bin string, srv *S3Server, certFile, keyFile string) error {
	var out bytes.Buffer
	// No --keep-alive: with it, versitygw v1.8.0 leaves the tail of a
	// chunk-signed upload unread and answers it, on the idle connection, with
	// an unsolicited "400 Bad Request" that a client may take for the answer
	// to its next request. Without it every response closes the connection,
	// which on loopback costs little.
	// --iam-dir: versitygw keeps the users that AddReadOnlyUser creates
	// there (the root account is the one of the environment).
	iamDir := filepath.Join(filepath.Dir(srv.Dir), "iam")
	if err := os.MkdirAll(iamDir, 0o700); err != nil {
		return err
	}
	args := []string{"--port", srv.Endpoint, "--health", "/health", "--quiet", "--iam-dir", iamDir}
	if certFile != "" {
		args = append(args, "--cert", certFile, "--key", keyFile)
	}
	cmd := exec.Command(bin, append(args, "posix", srv.Dir)...)
	cmd.Env = append(os.Environ(), "ROOT_ACCESS_KEY="+srv.AccessKey, "ROOT_SECRET_KEY="+srv.SecretKey)
	cmd.Stdout = &lockedWriter{w: &out}
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with the test binary
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	stop := func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	client := &http.Client{Timeout: time.Second, Transport: srv.Transport()}
	scheme := "http"
	if srv.Secure() {
		scheme = "https"
	}
	for {
		select {
		case err := <-exited:
			return fmt.Errorf("versitygw exited at start (%v):\n%s", err, cmd.Stdout.(*lockedWriter).String())
		default:
		}
		resp, err := client.Get(scheme + "://" + srv.Endpoint + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Cleanup(stop)
				return nil
			}
		}
		if time.Now().After(deadline) {
			stop()
			return fmt.Errorf("versitygw did not answer on %s within 20 s:\n%s", srv.Endpoint, cmd.Stdout.(*lockedWriter).String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  *bytes.Buffer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

func (l *lockedWriter) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.String()
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// writeLoopbackCert writes a self-signed certificate for 127.0.0.1 and its
// key into dir, and returns a pool that trusts it.
func writeLoopbackCert(dir string) (certFile, keyFile string, pool *x509.CertPool, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", "", nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: "cairn test S3"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IPAddresses:           []net.IP{net.ParseIP("127.0.0.1")},
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", "", nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return "", "", nil, err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", "", nil, err
	}
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", "", nil, err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return "", "", nil, err
	}
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certFile, keyFile, pool, nil
}
