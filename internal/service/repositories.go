package service

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/blob/location"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
)

// repositorySecrets are what a repository row keeps sealed.
type repositorySecrets struct {
	Password    string `json:"password"`
	S3AccessKey string `json:"s3_access_key,omitempty"`
	S3SecretKey string `json:"s3_secret_key,omitempty"`
}

// secretsAD binds sealed secrets to their repository: a row's secrets
// copied onto another row do not open.
func secretsAD(repoID string) []byte { return []byte("cairn repository secrets v1\x00" + repoID) }

func (s *Service) secretAEAD() (cipher.AEAD, error) {
	if len(s.cfg.SecretKey) != 32 {
		return nil, core.Invalid("the server has no secret key: repositories need one (it lives in the data directory)")
	}
	block, err := aes.NewCipher(s.cfg.SecretKey)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// sealSecrets encrypts a repository's secrets with the server's secret key
// (AES-256-GCM): "v1:" + base64(nonce ‖ ciphertext).
func (s *Service) sealSecrets(repoID string, sec repositorySecrets) (string, error) {
	aead, err := s.secretAEAD()
	if err != nil {
		return "", err
	}
	plain, _ := json.Marshal(sec)
	nonce := make([]byte, aead.NonceSize())
	_, _ = rand.Read(nonce)
	return "v1:" + base64.StdEncoding.EncodeToString(aead.Seal(nonce, nonce, plain, secretsAD(repoID))), nil
}

func (s *Service) openSecrets(r meta.Repository) (repositorySecrets, error) {
	var sec repositorySecrets
	aead, err := s.secretAEAD()
	if err != nil {
		return sec, err
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(r.Secrets, "v1:"))
	if !strings.HasPrefix(r.Secrets, "v1:") || err != nil || len(raw) < aead.NonceSize() {
		return sec, core.Corrupt("repository %q: its stored secrets are damaged", r.Name)
	}
	plain, err := aead.Open(nil, raw[:aead.NonceSize()], raw[aead.NonceSize():], secretsAD(r.ID))
	if err != nil {
		return sec, core.Corrupt("repository %q: its secrets do not open with this server's secret key (was the data directory's secret.key replaced?)", r.Name)
	}
	if err := json.Unmarshal(plain, &sec); err != nil {
		return sec, core.Corrupt("repository %q: its stored secrets are damaged", r.Name)
	}
	return sec, nil
}

func (s *Service) repositoryJSON(ctx context.Context, tx *meta.Tx, r meta.Repository) (apitypes.Repository, error) {
	out := apitypes.Repository{ID: r.ID, Name: r.Name, URL: r.URL, Default: r.Default, SameDisk: r.SameDisk, State: r.State,
		StateDetail: r.StateDetail, S3Region: r.S3Region, HasS3Keys: r.HasS3Keys, CreatedAt: r.CreatedAt}
	p, err := tx.ProjectByID(ctx, r.ProjectID)
	if err != nil {
		return out, err
	}
	out.Project = p.Name
	if n, err := tx.NodeByID(ctx, r.NodeID); err == nil {
		out.Node = n.Name
	} else if !meta.IsNoRows(err) {
		return out, err
	}
	return out, nil
}

// repositoryByRef finds a repository of the caller's project by name or id;
// another project's repository is not found.
func repositoryByRef(ctx context.Context, tx *meta.Tx, c Caller, ref string) (meta.Repository, error) {
	ref = strings.TrimSpace(ref)
	r, err := tx.RepositoryByName(ctx, c.ProjectID, ref)
	if meta.IsNoRows(err) && core.IsUUID(ref) {
		r, err = tx.RepositoryByID(ctx, c.ProjectID, ref)
	}
	if meta.IsNoRows(err) {
		return r, core.NotFound("repository %q not found in project %q", ref, c.ProjectName)
	}
	return r, err
}

// checkRepositoryURL validates a repository location as the server accepts
// it, an absolute directory on the node's host or an S3 bucket, and returns
// it in its one spelling (a directory cleaned: no "..", no trailing "/").
func checkRepositoryURL(url string) (location.Kind, string, error) {
	kind, rest, err := location.Parse(url)
	if err != nil {
		return "", "", err
	}
	switch kind {
	case location.Local:
		if !filepath.IsAbs(rest) {
			return "", "", core.Invalid("repository url %q: give an absolute directory on the node's host, or s3:http[s]://HOST/BUCKET[/PREFIX]", url)
		}
		return kind, filepath.Clean(rest), nil
	case location.S3:
		return kind, url, nil
	}
	return "", "", core.Invalid("repository url %q: a server repository is a directory or an S3 bucket", url)
}

// CreateRepository queues the creation (or, with a password, the adoption)
// of a repository; the node that reaches it initialises it.
func (s *Service) CreateRepository(ctx context.Context, c Caller, req apitypes.RepositoryCreate) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	if err := core.CheckName("repository", req.Name); err != nil {
		return apitypes.Task{}, err
	}
	kind, url, err := checkRepositoryURL(req.URL)
	if err != nil {
		return apitypes.Task{}, err
	}
	req.URL = url
	if kind != location.S3 && (req.S3AccessKey != "" || req.S3SecretKey != "" || req.S3Region != "") {
		return apitypes.Task{}, core.Invalid("S3 credentials and region apply to s3: repositories only")
	}
	if (req.S3AccessKey == "") != (req.S3SecretKey == "") {
		return apitypes.Task{}, core.Invalid("give both the S3 access key and the S3 secret key, or neither (the node's AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are used then)")
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		r, err := s.newRepository(ctx, tx, c.ProjectID, c.ProjectName, req, false)
		if err != nil {
			return nil, err
		}
		return s.repositoryTask(c.ProjectID, apitypes.OpRepositoryInit, r,
			map[string]string{"adopt": fmt.Sprint(req.Password != ""), "default": fmt.Sprint(req.Default)}), nil
	})
}

func (s *Service) newRepository(ctx context.Context, tx *meta.Tx, projectID, projectName string, req apitypes.RepositoryCreate, sameDisk bool) (meta.Repository, error) {
	if _, err := tx.RepositoryByName(ctx, projectID, req.Name); err == nil {
		return meta.Repository{}, core.Conflict("name_taken", "a repository named %q already exists in project %q", req.Name, projectName)
	} else if !meta.IsNoRows(err) {
		return meta.Repository{}, err
	}
	if _, err := tx.RepositoryByURL(ctx, req.URL); err == nil {
		return meta.Repository{}, core.Conflict("url_taken", "another repository of this server already uses %s", req.URL)
	} else if !meta.IsNoRows(err) {
		return meta.Repository{}, err
	}
	n, err := s.pickNode(ctx, tx, req.Node)
	if err != nil {
		return meta.Repository{}, err
	}
	r := meta.Repository{ID: core.NewID(), ProjectID: projectID, Name: req.Name, URL: req.URL, NodeID: n.ID,
		SameDisk: sameDisk, State: apitypes.RepositoryCreating, S3Region: req.S3Region,
		HasS3Keys: req.S3AccessKey != "", CreatedAt: s.now()}
	sec := repositorySecrets{Password: req.Password, S3AccessKey: req.S3AccessKey, S3SecretKey: req.S3SecretKey}
	if sec.Password == "" {
		sec.Password = core.RandomToken(24)
	}
	if r.Secrets, err = s.sealSecrets(r.ID, sec); err != nil {
		return meta.Repository{}, err
	}
	// The first repository of a project is its default at once; one asked
	// to be default becomes it when it is ready (commitRepository).
	_, err = tx.DefaultRepository(ctx, projectID)
	switch {
	case meta.IsNoRows(err):
		r.Default = true
	case err != nil:
		return meta.Repository{}, err
	}
	return r, tx.InsertRepository(ctx, r)
}

func (s *Service) repositoryTask(projectID, op string, r meta.Repository, params map[string]string) *meta.Task {
	return &meta.Task{ID: core.NewID(), Kind: op, State: apitypes.TaskQueued, ProjectID: projectID, NodeID: r.NodeID,
		ResourceType: "repository", ResourceID: r.ID, Params: params, CreatedAt: s.now()}
}

// ListRepositories lists the caller's project's repositories by name.
func (s *Service) ListRepositories(ctx context.Context, c Caller, pg Page) (apitypes.List[apitypes.Repository], error) {
	if err := c.requireUser(); err != nil {
		return apitypes.List[apitypes.Repository]{}, err
	}
	var out apitypes.List[apitypes.Repository]
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		rs, err := tx.Repositories(ctx, c.ProjectID, pg.Cursor, pg.Limit+1)
		if err != nil {
			return err
		}
		var convErr error
		out = pageOf(rs, pg.Limit, func(r meta.Repository) apitypes.Repository {
			j, err := s.repositoryJSON(ctx, tx, r)
			if err != nil {
				convErr = err
			}
			return j
		}, func(r meta.Repository) string { return r.Name })
		return convErr
	})
	return out, err
}

// GetRepository returns one repository; reveal adds its password, for an
// admin only.
func (s *Service) GetRepository(ctx context.Context, c Caller, ref string, reveal bool) (apitypes.Repository, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.Repository{}, err
	}
	if reveal {
		if err := c.requireAdmin(); err != nil {
			return apitypes.Repository{}, core.Forbidden("only an admin may reveal a repository's password")
		}
	}
	var out apitypes.Repository
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		r, err := repositoryByRef(ctx, tx, c, ref)
		if err != nil {
			return err
		}
		if out, err = s.repositoryJSON(ctx, tx, r); err != nil {
			return err
		}
		if reveal {
			sec, err := s.openSecrets(r)
			if err != nil {
				return err
			}
			out.Password = sec.Password
		}
		return nil
	})
	return out, err
}

// readyRepository loads a repository that can take work.
func readyRepository(ctx context.Context, tx *meta.Tx, c Caller, ref string) (meta.Repository, error) {
	r, err := repositoryByRef(ctx, tx, c, ref)
	if err != nil {
		return r, err
	}
	if r.State != apitypes.RepositoryReady {
		return r, core.Conflict("not_ready", "repository %q is %s%s", r.Name, r.State, detailSuffix(r.StateDetail))
	}
	return r, nil
}

func detailSuffix(d string) string {
	if d == "" {
		return ""
	}
	return ": " + d
}

// VerifyRepository queues a check of a repository's structure and, with a
// read-data share, of its data.
func (s *Service) VerifyRepository(ctx context.Context, c Caller, ref string, req apitypes.RepositoryVerify) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	if req.ReadDataPercent < 0 || req.ReadDataPercent > 100 {
		return apitypes.Task{}, core.Invalid("read_data_percent %v: want 0 to 100", req.ReadDataPercent)
	}
	return s.submit(ctx, c, func(tx *meta.Tx) (*meta.Task, error) {
		r, err := readyRepository(ctx, tx, c, ref)
		if err != nil {
			return nil, err
		}
		t := s.repositoryTask(c.ProjectID, apitypes.OpRepositoryVerify, r, map[string]string{"read_data_percent": fmt.Sprint(req.ReadDataPercent)})
		t.Cancelable = true
		return t, nil
	})
}

// PruneRepository queues a prune of a repository, or returns the prune
// already queued for it (prunes coalesce: at most one waits).
func (s *Service) PruneRepository(ctx context.Context, c Caller, ref string) (apitypes.Task, error) {
	if err := c.requireWrite(); err != nil {
		return apitypes.Task{}, err
	}
	var out apitypes.Task
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		r, err := readyRepository(ctx, tx, c, ref)
		if err != nil {
			return err
		}
		t := s.repositoryTask(c.ProjectID, apitypes.OpRepositoryPrune, r, nil)
		queued, err := tx.QueuedTaskFor(ctx, apitypes.OpRepositoryPrune, r.ID)
		switch {
		case err == nil:
			*t = queued
		case !meta.IsNoRows(err):
			return err
		default:
			if err := tx.InsertTask(ctx, t); err != nil {
				return err
			}
		}
		out, err = s.taskJSON(ctx, tx, *t)
		return err
	})
	if err == nil {
		s.changed.notify()
	}
	return out, err
}

// EnsureDefaultRepository makes, at the first start of the embedded
// default, the repository "default" of project "default" in dir on the local
// node, flagged as sharing the volumes' disk: create initialises it with the
// password given (in this process: the node is this host). Later starts
// change nothing, nor does a project that already has repositories.
func (s *Service) EnsureDefaultRepository(ctx context.Context, nodeID, dir string, create func(ctx context.Context, password string) error) error {
	return s.db.Update(ctx, func(tx *meta.Tx) error {
		p, err := tx.ProjectByName(ctx, apitypes.DefaultProject)
		if err != nil {
			return err
		}
		if rs, err := tx.Repositories(ctx, p.ID, "", 1); err != nil || len(rs) > 0 {
			return err
		}
		r, err := s.newRepository(ctx, tx, p.ID, p.Name, apitypes.RepositoryCreate{Name: "default", URL: dir, Node: nodeID}, true)
		if err != nil {
			return err
		}
		sec, err := s.openSecrets(r)
		if err != nil {
			return err
		}
		if err := create(ctx, sec.Password); err != nil {
			return fmt.Errorf("creating the default repository in %s: %w", dir, err)
		}
		r.State = apitypes.RepositoryReady
		return tx.UpdateRepository(ctx, r)
	})
}

// nodeRepository is what a node needs to open r: its location and its
// secrets, unsealed.
func (s *Service) nodeRepository(r meta.Repository) (*apitypes.NodeRepository, error) {
	sec, err := s.openSecrets(r)
	if err != nil {
		return nil, err
	}
	return &apitypes.NodeRepository{ID: r.ID, URL: r.URL, Password: sec.Password, S3AccessKey: sec.S3AccessKey,
		S3SecretKey: sec.S3SecretKey, S3Region: r.S3Region}, nil
}

func isRepositoryOp(kind string) bool { return strings.HasPrefix(kind, "repository.") }

// repositoryOutcome makes the plan of a repository task: the repository's
// location and secrets, which the node needs to open it.
func (s *Service) repositoryOutcome(ctx context.Context, tx *meta.Tx, t meta.Task) (*outcome, error) {
	r, err := tx.RepositoryByID(ctx, t.ProjectID, t.ResourceID)
	if meta.IsNoRows(err) {
		return nil, core.NotFound("repository %s no longer exists", t.ResourceID)
	}
	if err != nil {
		return nil, err
	}
	nr, err := s.nodeRepository(r)
	if err != nil {
		return nil, err
	}
	nr.Adopt = t.Params["adopt"] == "true"
	if p := t.Params["read_data_percent"]; p != "" {
		fmt.Sscan(p, &nr.ReadData)
	}
	return &outcome{plan: apitypes.Plan{Op: t.Kind, Repository: nr}}, nil
}

// commitRepository records what a repository task did.
func (s *Service) commitRepository(ctx context.Context, tx *meta.Tx, t *meta.Task, res apitypes.NodeComplete) error {
	if t.Kind != apitypes.OpRepositoryInit {
		return nil
	}
	r, err := tx.RepositoryByID(ctx, t.ProjectID, t.ResourceID)
	if meta.IsNoRows(err) {
		return nil
	}
	if err != nil {
		return err
	}
	r.State, r.StateDetail = apitypes.RepositoryReady, ""
	if res.Result["same_disk"] == "true" {
		r.SameDisk = true
	}
	if t.Params["default"] == "true" && !r.Default {
		if err := tx.ClearDefaultRepository(ctx, r.ProjectID); err != nil {
			return err
		}
		r.Default = true
	}
	return tx.UpdateRepository(ctx, r)
}

// undoRepository forgets a repository that could not be created or
// adopted (the failed task says why), so that its name and URL are free for
// another try.
func (s *Service) undoRepository(ctx context.Context, tx *meta.Tx, t meta.Task, _ *apitypes.NodeComplete) error {
	if t.Kind != apitypes.OpRepositoryInit {
		return nil
	}
	r, err := tx.RepositoryByID(ctx, t.ProjectID, t.ResourceID)
	if meta.IsNoRows(err) || (err == nil && r.State != apitypes.RepositoryCreating) {
		return nil
	}
	if err != nil {
		return err
	}
	if err := tx.DeleteRepository(ctx, r.ID); err != nil {
		return err
	}
	if r.Default {
		// Another repository of the project takes over as default.
		rs, err := tx.Repositories(ctx, r.ProjectID, "", 1)
		if err != nil || len(rs) == 0 {
			return err
		}
		rs[0].Default = true
		return tx.UpdateRepository(ctx, rs[0])
	}
	return nil
}
