// Package location opens a blob.Store from the location string an operator
// types (`--repo`, CAIRN_REPO, a repository's URL in the server):
//
//	/srv/backups/repo, ./repo      a local directory (blob/local)
//	file:///srv/backups/repo       the same, as a URL
//	s3:https://HOST[:PORT]/BUCKET[/PREFIX]
//	s3:http://HOST[:PORT]/BUCKET[/PREFIX]
//	                               an S3-compatible bucket (blob/s3), path-style;
//	                               credentials from Options or AWS_ACCESS_KEY_ID /
//	                               AWS_SECRET_ACCESS_KEY
//	mem:                           a new, empty in-memory store (blob/mem; tests)
//
// It is the one package that knows every backend, kept apart from package
// blob so that the backends can import blob. S3 stores come wrapped in
// blob.Retry (their errors can be transient); local and memory stores are
// returned as they are.
package location

import (
	"context"
	"regexp"
	"strings"

	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/blob/local"
	"github.com/cairn-backup/cairn/internal/blob/mem"
	"github.com/cairn-backup/cairn/internal/blob/s3"
	"github.com/cairn-backup/cairn/internal/core"
)

// Options are the settings a location string does not carry.
type Options struct {
	// S3 credentials; empty means AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY
	// (and AWS_SESSION_TOKEN) from the environment.
	AccessKey    string
	SecretKey    string
	SessionToken string
	// Region for S3; empty means AWS_REGION / AWS_DEFAULT_REGION, else
	// asking the server.
	Region string
	// Connections bounds concurrent S3 requests (s3.DefaultConnections when 0).
	Connections int
	// Create makes a missing directory or bucket (repository init).
	Create bool
	// Retry is the policy for S3 stores; nil means blob.DefaultRetryPolicy.
	Retry *blob.RetryPolicy
}

// Kind names a location's backend.
type Kind string

// The kinds of locations.
const (
	Local  Kind = "local"
	S3     Kind = "s3"
	Memory Kind = "mem"
)

var schemeRE = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9+.-]*:`)

// Parse returns the backend a location names and its backend-specific rest:
// the directory for Local, the location itself for S3, "" for Memory.
func Parse(loc string) (Kind, string, error) {
	switch {
	case loc == "":
		return "", "", core.Invalid("empty repository location: give a directory, file:///DIR or s3:http[s]://HOST/BUCKET[/PREFIX]")
	case loc == "mem:":
		return Memory, "", nil
	case strings.HasPrefix(loc, "s3:"):
		if _, err := s3.ParseLocation(loc); err != nil {
			return "", "", err
		}
		return S3, loc, nil
	case strings.HasPrefix(loc, "file://"):
		p := strings.TrimPrefix(loc, "file://")
		if !strings.HasPrefix(p, "/") {
			return "", "", core.Invalid("location %q: a file:// URL needs an absolute path (file:///DIR), or give the plain path", loc)
		}
		return Local, p, nil
	case schemeRE.MatchString(loc) && !strings.HasPrefix(loc, "/") && !strings.HasPrefix(loc, "."):
		scheme, _, _ := strings.Cut(loc, ":")
		return "", "", core.Invalid("location %q: unknown backend %q (want a directory, file://, s3: or mem:; write ./%s for a directory of that name)", loc, scheme, loc)
	}
	return Local, loc, nil
}

// Open opens the store a location names.
func Open(ctx context.Context, loc string, opts Options) (blob.Store, error) {
	kind, rest, err := Parse(loc)
	if err != nil {
		return nil, err
	}
	switch kind {
	case Memory:
		return mem.New(), nil
	case Local:
		return local.Open(rest, opts.Create)
	}
	cfg, err := s3.ParseLocation(rest)
	if err != nil {
		return nil, err
	}
	cfg.AccessKey, cfg.SecretKey, cfg.SessionToken = opts.AccessKey, opts.SecretKey, opts.SessionToken
	cfg.Region = opts.Region
	cfg.Connections = opts.Connections
	cfg.CreateBucket = opts.Create
	store, err := s3.Open(ctx, cfg)
	if err != nil {
		return nil, err
	}
	policy := blob.DefaultRetryPolicy
	if opts.Retry != nil {
		policy = *opts.Retry
	}
	return blob.Retry(store, policy), nil
}
