// Package s3 is a blob.Store on an S3-compatible object store (AWS S3,
// MinIO, Ceph RGW, versitygw...), through minio-go with path-style requests.
// Object "data/ab/cd" is the key PREFIX/data/ab/cd in the bucket.
//
// Contract, beyond package blob's:
//   - Save is one PUT (multipart above Config.PartSize): S3 makes an object
//     visible only once its upload completed, so readers never see a partial
//     object. A failed or cancelled Save stores nothing (minio-go aborts
//     incomplete multipart uploads). Some servers (versitygw 1.8 among them)
//     store whatever body arrived when an unsigned upload is cut short, so
//     uploads always carry proof of their end: over http the payload is
//     signed chunk by chunk (aws-chunked), over https it carries Content-MD5
//     (for that, minio-go buffers an object of up to PartSize in memory).
//   - At most Config.Connections requests run at once per Store: each call
//     waits for a slot, and a Load keeps its slot until its reader is closed.
//     List holds a slot only while it fetches a page, never while it calls
//     fn, so fn may use the store.
//   - This package never retries (minio-go's own retries are turned off, so
//     that retries do not multiply): it marks network errors, HTTP 5xx and
//     429 / SlowDown as blob.Transient and leaves retrying to blob.Retry,
//     which blob/location puts around every S3 store.
//   - Errors: a missing key is blob.IsNotExist; refused credentials wrap
//     core.Unauthorized and say so; a missing bucket is core.KindNotFound (and
//     is never IsNotExist: a vanished bucket must not look like missing
//     objects).
//
// Every method may be called concurrently.
package s3

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/minio/minio-go/v7/pkg/s3utils"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/core"
)

func init() {
	// minio-go v7.4.1 sleeps a backoff (up to DefaultRetryUnit) after a
	// retryable failure even when no attempt is left, as with MaxRetries 1
	// here. That sleep only delays blob.Retry, which owns the backoff:
	// shrink it. (Set once, before any client exists.)
	minio.DefaultRetryUnit = time.Millisecond
}

// Defaults for Config.
const (
	DefaultConnections = 8
	DefaultPartSize    = 64 << 20
	listPage           = 1000 // S3's largest listing page
)

// Config says where and how to reach the store.
type Config struct {
	Endpoint string // host or host:port
	Secure   bool   // https
	Bucket   string
	Prefix   string // inside the bucket, without leading or trailing '/'; may be empty

	// Credentials. When AccessKey and SecretKey are both empty, the
	// environment's AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
	// AWS_SESSION_TOKEN are used.
	AccessKey    string
	SecretKey    string
	SessionToken string

	// Region signs the requests; empty means AWS_REGION or
	// AWS_DEFAULT_REGION from the environment, else asking the server for
	// the bucket's location.
	Region string

	// Connections bounds the requests in flight (DefaultConnections when 0).
	Connections int
	// PartSize is the largest object sent in one PUT and the part size of
	// larger ones (DefaultPartSize when 0; at least 5 MiB).
	PartSize int64

	// CreateBucket makes Open create a missing bucket (repository init);
	// otherwise a missing bucket is an error.
	CreateBucket bool

	// Transport replaces the HTTP transport (tests, custom TLS roots).
	Transport http.RoundTripper
}

// Location renders the config as the location string ParseLocation reads.
func (c Config) Location() string {
	scheme := "http"
	if c.Secure {
		scheme = "https"
	}
	loc := "s3:" + scheme + "://" + c.Endpoint + "/" + c.Bucket
	if c.Prefix != "" {
		loc += "/" + c.Prefix
	}
	return loc
}

// ParseLocation reads "s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX]" (or
// "s3:HOST[:PORT]/BUCKET[/PREFIX]", which means https) into a Config that
// holds no credentials yet.
func ParseLocation(loc string) (Config, error) {
	rest, ok := strings.CutPrefix(loc, "s3:")
	if !ok {
		return Config{}, core.Invalid("S3 location %q: must start with s3:", loc)
	}
	if !strings.Contains(rest, "://") {
		rest = "https://" + rest
	}
	u, err := url.Parse(rest)
	if err != nil {
		return Config{}, core.Invalid("S3 location %q: %v", loc, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return Config{}, core.Invalid("S3 location %q: scheme %q, want http or https", loc, u.Scheme)
	}
	if u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return Config{}, core.Invalid("S3 location %q: want s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX] (credentials go in AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or flags)", loc)
	}
	p := strings.Trim(u.Path, "/")
	bucket, prefix, _ := strings.Cut(p, "/")
	if bucket == "" {
		return Config{}, core.Invalid("S3 location %q: no bucket (want s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX])", loc)
	}
	if err := s3utils.CheckValidBucketName(bucket); err != nil {
		return Config{}, core.Invalid("S3 location %q: bucket %q: %v", loc, bucket, err)
	}
	if prefix != "" {
		if err := blob.ValidName(prefix); err != nil {
			return Config{}, core.Invalid("S3 location %q: prefix %q: %v", loc, prefix, err)
		}
	}
	return Config{Endpoint: u.Host, Secure: u.Scheme == "https", Bucket: bucket, Prefix: prefix}, nil
}

// Store is an S3 bucket (and prefix) holding blobs.
type Store struct {
	cfg       Config
	client    *minio.Client
	transport http.RoundTripper
	sem       chan struct{}
	where     string // "bucket B at http://host:port", for messages
}

var _ blob.Store = (*Store)(nil)

// Open connects to the store and checks the bucket (creating it when
// cfg.CreateBucket is set): wrong credentials and a missing bucket are found
// here, with clear errors, rather than at the first Save.
func Open(ctx context.Context, cfg Config) (*Store, error) {
	if cfg.Endpoint == "" || cfg.Bucket == "" {
		return nil, core.Invalid("S3 store: endpoint and bucket are required")
	}
	cfg.Prefix = strings.Trim(cfg.Prefix, "/")
	if cfg.AccessKey == "" && cfg.SecretKey == "" {
		cfg.AccessKey = os.Getenv("AWS_ACCESS_KEY_ID")
		cfg.SecretKey = os.Getenv("AWS_SECRET_ACCESS_KEY")
		if cfg.SessionToken == "" {
			cfg.SessionToken = os.Getenv("AWS_SESSION_TOKEN")
		}
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, core.Unauthorized("no S3 credentials for %s: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or pass them as options", cfg.Location())
	}
	if cfg.Region == "" {
		cfg.Region = os.Getenv("AWS_REGION")
	}
	if cfg.Region == "" {
		cfg.Region = os.Getenv("AWS_DEFAULT_REGION")
	}
	if cfg.Connections <= 0 {
		cfg.Connections = DefaultConnections
	}
	if cfg.PartSize <= 0 {
		cfg.PartSize = DefaultPartSize
	}
	cfg.PartSize = max(cfg.PartSize, 5<<20)
	transport := cfg.Transport
	if transport == nil {
		t, err := minio.DefaultTransport(cfg.Secure)
		if err != nil {
			return nil, fmt.Errorf("S3 store %s: %w", cfg.Location(), err)
		}
		// Keep an idle connection for every slot.
		t.MaxIdleConnsPerHost = cfg.Connections
		transport = t
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, cfg.SessionToken),
		Secure:       cfg.Secure,
		Region:       cfg.Region,
		BucketLookup: minio.BucketLookupPath,
		Transport:    transport,
		MaxRetries:   1, // blob.Retry retries; see the package documentation
	})
	if err != nil {
		return nil, core.Invalid("S3 store %s: %v", cfg.Location(), err)
	}
	scheme := "http"
	if cfg.Secure {
		scheme = "https"
	}
	s := &Store{
		cfg:       cfg,
		client:    client,
		transport: transport,
		sem:       make(chan struct{}, cfg.Connections),
		where:     fmt.Sprintf("bucket %s at %s://%s", cfg.Bucket, scheme, cfg.Endpoint),
	}
	if err := s.checkBucket(ctx); err != nil {
		return nil, err
	}
	return s, nil
}

// checkBucket lists at most one key of the store: unlike HEAD, a GET's
// error answer carries a code, so refused credentials (InvalidAccessKeyId,
// SignatureDoesNotMatch, AccessDenied) and NoSuchBucket are told apart.
func (s *Store) checkBucket(ctx context.Context) error {
	err := s.probe(ctx)
	if err == nil {
		return nil
	}
	if minio.ToErrorResponse(err).Code != "NoSuchBucket" {
		return s.mapError(ctx, "opening", "", err)
	}
	if !s.cfg.CreateBucket {
		return s.missingBucket(err)
	}
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	err = s.client.MakeBucket(ctx, s.cfg.Bucket, minio.MakeBucketOptions{Region: s.cfg.Region})
	if err != nil {
		code := minio.ToErrorResponse(err).Code
		if code == "BucketAlreadyOwnedByYou" || code == "BucketAlreadyExists" {
			return nil // created meanwhile (by a concurrent init)
		}
		return s.mapError(ctx, "creating", "", err)
	}
	return nil
}

func (s *Store) probe(ctx context.Context) error {
	if err := s.acquire(ctx); err != nil {
		return err
	}
	defer s.release()
	fetchOwner := false
	prefix := ""
	if s.cfg.Prefix != "" {
		prefix = s.cfg.Prefix + "/"
	}
	for obj := range s.client.ListObjectsIter(ctx, s.cfg.Bucket, minio.ListObjectsOptions{
		Prefix: prefix, Recursive: true, MaxKeys: 1, FetchOwner: &fetchOwner,
	}) {
		if obj.Err != nil {
			return obj.Err
		}
		break
	}
	return ctx.Err()
}

func (s *Store) missingBucket(err error) error {
	return &core.Error{Kind: core.KindNotFound, Code: "not_found",
		Message: fmt.Sprintf("S3 bucket %s does not exist at %s: create it, or let `cairn repo init` create it", s.cfg.Bucket, s.endpointURL()),
		Err:     err}
}

func (s *Store) endpointURL() string {
	if s.cfg.Secure {
		return "https://" + s.cfg.Endpoint
	}
	return "http://" + s.cfg.Endpoint
}

func (s *Store) acquire(ctx context.Context) error {
	select {
	case s.sem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (s *Store) release() { <-s.sem }

func (s *Store) key(name string) string {
	if s.cfg.Prefix == "" {
		return name
	}
	return s.cfg.Prefix + "/" + name
}

// Save implements blob.Store.
func (s *Store) Save(ctx context.Context, name string, r io.Reader, size int64) error {
	if err := blob.ValidName(name); err != nil {
		return err
	}
	if size < 0 {
		return core.Invalid("saving blob %s: negative size %d", name, size)
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("saving blob %s: %w", name, err)
	}
	defer s.release()
	body := &recordingReader{ctx: ctx, r: blob.SizedReader(r, size, name)}
	_, err := s.client.PutObject(ctx, s.cfg.Bucket, s.key(name), body, size, minio.PutObjectOptions{
		ContentType:          "application/octet-stream",
		PartSize:             uint64(s.cfg.PartSize),
		NumThreads:           1,            // parallelism comes from concurrent Saves, within the slots
		DisableContentSha256: s.cfg.Secure, // over http the payload is signed chunk by chunk
		SendContentMd5:       s.cfg.Secure, // over https Content-MD5 makes a cut upload fail
	})
	readErr := body.close()
	if err != nil {
		if readErr != nil && ctx.Err() == nil {
			// The caller's data failed (or had the wrong size): that is
			// the cause, and retrying the PUT cannot help.
			return fmt.Errorf("saving blob %s to S3 %s: %w", name, s.where, readErr)
		}
		return s.mapError(ctx, "saving", name, err)
	}
	return nil
}

// recordingReader remembers the error its reader returned, so that Save can
// tell a failing source from a failing upload, and stops reading once closed:
// net/http may still read a request body after the request failed, and the
// caller's reader must be left alone once Save has returned (Retry rewinds
// it for the next attempt). Once the Save's context is done it gives no more
// bytes: the HTTP transport notices a cancelled request only between writes,
// and could otherwise send the whole body, which the server would store.
type recordingReader struct {
	mu     sync.Mutex
	ctx    context.Context
	r      io.Reader
	err    error
	closed bool
}

var errSaveEnded = errors.New("the Save this upload belonged to has ended")

func (r *recordingReader) Read(p []byte) (int, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return 0, errSaveEnded
	}
	if err := r.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := r.r.Read(p)
	if err != nil && err != io.EOF {
		r.err = err
	}
	return n, err
}

// close waits for a Read in progress, refuses later ones and returns the
// reader's error, if any.
func (r *recordingReader) close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return r.err
}

// Load implements blob.Store.
func (s *Store) Load(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	if err := blob.ValidName(name); err != nil {
		return nil, err
	}
	if offset < 0 || length < 0 {
		return nil, blob.RangeError(name, offset, length, -1)
	}
	if err := s.acquire(ctx); err != nil {
		return nil, fmt.Errorf("loading blob %s: %w", name, err)
	}
	rc, err := s.open(ctx, name, offset, length)
	if err != nil {
		s.release()
		return nil, err
	}
	return &slotReader{ReadCloser: rc, release: s.release}, nil
}

// open sends the GET and checks that the answer covers the range exactly.
func (s *Store) open(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	opts := minio.GetObjectOptions{}
	ranged := offset > 0 || length > 0
	if ranged {
		end := int64(0) // to the end
		if length > 0 {
			end = offset + length - 1
		}
		if err := opts.SetRange(offset, end); err != nil {
			return nil, blob.RangeError(name, offset, length, -1)
		}
	}
	body, info, header, err := minio.Core{Client: s.client}.GetObject(ctx, s.cfg.Bucket, s.key(name), opts)
	if err != nil {
		if minio.ToErrorResponse(err).Code == "InvalidRange" {
			return s.invalidRange(ctx, name, offset, length)
		}
		return nil, s.mapError(ctx, "loading", name, err)
	}
	want := info.Size
	if ranged {
		total, ok := contentRangeTotal(header.Get("Content-Range"))
		if !ok {
			_ = body.Close()
			return nil, fmt.Errorf("loading blob %s from S3 %s: the server ignored the Range header", name, s.where)
		}
		if length > 0 && info.Size != length {
			// S3 cuts a range that runs past the end.
			_ = body.Close()
			return nil, blob.RangeError(name, offset, length, total)
		}
		want = info.Size
	}
	return blob.ExactReadCloser(&transientBody{ctx: ctx, rc: body}, name, want), nil
}

// invalidRange answers a 416: an empty reader when the range is "to the end"
// from exactly the end (S3 refuses that range, the contract allows it).
func (s *Store) invalidRange(ctx context.Context, name string, offset, length int64) (io.ReadCloser, error) {
	info, err := s.client.StatObject(ctx, s.cfg.Bucket, s.key(name), minio.StatObjectOptions{})
	if err != nil {
		return nil, s.mapError(ctx, "loading", name, err)
	}
	if length == 0 && offset == info.Size {
		return io.NopCloser(strings.NewReader("")), nil
	}
	return nil, blob.RangeError(name, offset, length, info.Size)
}

// contentRangeTotal reads the total size from "bytes A-B/TOTAL".
func contentRangeTotal(v string) (int64, bool) {
	_, total, ok := strings.Cut(v, "/")
	if !ok || !strings.HasPrefix(v, "bytes ") {
		return 0, false
	}
	n, err := strconv.ParseInt(total, 10, 64)
	if err != nil {
		return -1, true // "*": unknown
	}
	return n, true
}

// transientBody marks read errors of a response body as transient (the
// connection broke), except cancellation.
type transientBody struct {
	ctx context.Context
	rc  io.ReadCloser
}

// Read fails with the context's error once it is done: the HTTP transport
// notices a cancelled request only when it next reads from the network, and
// what it has already received would still be read.
func (b *transientBody) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := b.rc.Read(p)
	if err != nil && err != io.EOF {
		if cerr := b.ctx.Err(); cerr != nil {
			return n, cerr
		}
		err = blob.Transient(err)
	}
	return n, err
}

func (b *transientBody) Close() error { return b.rc.Close() }

// slotReader gives the connection slot back on Close, once.
type slotReader struct {
	io.ReadCloser
	once    sync.Once
	release func()
}

func (r *slotReader) Close() error {
	err := r.ReadCloser.Close()
	r.once.Do(r.release)
	return err
}

// Stat implements blob.Store.
func (s *Store) Stat(ctx context.Context, name string) (blob.Info, error) {
	if err := blob.ValidName(name); err != nil {
		return blob.Info{}, err
	}
	if err := s.acquire(ctx); err != nil {
		return blob.Info{}, fmt.Errorf("stat of blob %s: %w", name, err)
	}
	defer s.release()
	info, err := s.client.StatObject(ctx, s.cfg.Bucket, s.key(name), minio.StatObjectOptions{})
	if err != nil {
		return blob.Info{}, s.mapError(ctx, "stat of", name, err)
	}
	return blob.Info{Name: name, Size: info.Size}, nil
}

// Remove implements blob.Store. S3 answers success for a missing key.
func (s *Store) Remove(ctx context.Context, name string) error {
	if err := blob.ValidName(name); err != nil {
		return err
	}
	if err := s.acquire(ctx); err != nil {
		return fmt.Errorf("removing blob %s: %w", name, err)
	}
	defer s.release()
	err := s.client.RemoveObject(ctx, s.cfg.Bucket, s.key(name), minio.RemoveObjectOptions{})
	if err != nil {
		err = s.mapError(ctx, "removing", name, err)
		if blob.IsNotExist(err) {
			return nil
		}
		return err
	}
	return nil
}

// List implements blob.Store. It fetches one page at a time (holding a slot
// only for the request) and resumes after the page's last key.
func (s *Store) List(ctx context.Context, prefix string, fn func(blob.Info) error) error {
	if err := blob.ValidPrefix(prefix); err != nil {
		return err
	}
	keyPrefix := prefix
	if s.cfg.Prefix != "" {
		keyPrefix = s.cfg.Prefix + "/" + prefix
	}
	strip := len(keyPrefix) - len(prefix)
	fetchOwner := false
	after := ""
	for {
		page, err := s.listPage(ctx, keyPrefix, after, &fetchOwner)
		if err != nil {
			return err
		}
		for _, obj := range page {
			name := obj.Key[strip:]
			if blob.ValidName(name) != nil {
				continue // a "directory" marker or a foreign object
			}
			if err := fn(blob.Info{Name: name, Size: obj.Size}); err != nil {
				return err
			}
		}
		if len(page) < listPage {
			return nil
		}
		after = page[len(page)-1].Key
	}
}

func (s *Store) listPage(ctx context.Context, keyPrefix, after string, fetchOwner *bool) ([]minio.ObjectInfo, error) {
	if err := s.acquire(ctx); err != nil {
		return nil, fmt.Errorf("listing blobs: %w", err)
	}
	defer s.release()
	var page []minio.ObjectInfo
	for obj := range s.client.ListObjectsIter(ctx, s.cfg.Bucket, minio.ListObjectsOptions{
		Prefix:     keyPrefix,
		Recursive:  true,
		MaxKeys:    listPage,
		StartAfter: after,
		FetchOwner: fetchOwner,
	}) {
		if obj.Err != nil {
			return nil, s.mapError(ctx, "listing", keyPrefix+"*", obj.Err)
		}
		page = append(page, obj)
		if len(page) == listPage {
			break // the iterator fetches no further page until asked
		}
	}
	if err := ctx.Err(); err != nil {
		// The iterator ends silently when ctx is done.
		return nil, fmt.Errorf("listing blobs: %w", err)
	}
	return page, nil
}

// Close implements blob.Store.
func (s *Store) Close() error {
	if t, ok := s.transport.(interface{ CloseIdleConnections() }); ok {
		t.CloseIdleConnections()
	}
	return nil
}

// Transient S3 error codes (besides any HTTP 5xx and 429).
var transientCodes = map[string]bool{
	"SlowDown": true, "RequestTimeout": true, "InternalError": true, "ServiceUnavailable": true,
	"XMinioServerNotInitialized": true, "OperationAborted": true,
	"TooManyRequests": true,
}

// Codes that mean the credentials were refused.
var refusedCodes = map[string]bool{
	"InvalidAccessKeyId": true, "SignatureDoesNotMatch": true, "AccessDenied": true,
	"ExpiredToken": true, "InvalidToken": true, "TokenRefreshRequired": true, "AllAccessDisabled": true,
	"InvalidSecurity":    true,
	"XAdminUserNotFound": true, // versitygw's answer (404) for an unknown access key
}

// mapError turns a minio-go error into the contract's errors, naming the
// object and the store.
func (s *Store) mapError(ctx context.Context, doing, name string, err error) error {
	what := "blob " + name
	if name == "" {
		what = "the bucket"
	}
	if cerr := ctx.Err(); cerr != nil {
		return fmt.Errorf("%s %s in S3 %s: %w", doing, what, s.where, cerr)
	}
	resp := minio.ToErrorResponse(err)
	switch {
	case resp.Code == "NoSuchBucket":
		return fmt.Errorf("%s %s: %w", doing, what, s.missingBucket(err))
	case resp.Code == "NoSuchKey" || (resp.StatusCode == http.StatusNotFound && name != "" && resp.Code != "NoSuchBucket"):
		return fmt.Errorf("S3 %s: %w", s.where, blob.NotExist(name))
	case refusedCodes[resp.Code] || resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return &core.Error{Kind: core.KindUnauthorized, Code: "unauthorized",
			Message: fmt.Sprintf("%s %s: S3 %s refused the credentials (%s): check the access key and secret (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and the bucket's permissions", doing, what, s.where, resp.Code),
			Err:     err}
	}
	failure := fmt.Errorf("%s %s in S3 %s: %w", doing, what, s.where, err)
	if resp.Code != "" {
		failure = fmt.Errorf("%s %s in S3 %s: %s (HTTP %d): %w", doing, what, s.where, resp.Code, resp.StatusCode, err)
	}
	if transientCodes[resp.Code] || resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests ||
		(resp.StatusCode == 0 && isNetworkError(err)) {
		return blob.Transient(failure)
	}
	return failure
}

// isNetworkError reports connection-level failures: refused, reset, timed
// out, cut short.
func isNetworkError(err error) bool {
	var unknownCA x509.UnknownAuthorityError
	var badCert x509.CertificateInvalidError
	var badHost x509.HostnameError
	if errors.As(err, &unknownCA) || errors.As(err, &badCert) || errors.As(err, &badHost) {
		return false // retrying will not fix a certificate
	}
	var netErr net.Error
	var urlErr *url.Error
	return errors.As(err, &netErr) || errors.As(err, &urlErr) ||
		errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.EPIPE)
}
