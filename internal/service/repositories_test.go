package service

import (
	"context"
	"crypto/rand"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
)

func newRepoTestService(t *testing.T) (*Service, Caller, Caller) {
	s, admin, node := newTestService(t)
	s.cfg.SecretKey = make([]byte, 32)
	rand.Read(s.cfg.SecretKey)
	return s, admin, node
}

// completeNext claims the next task and completes it as the node would.
func completeNext(t *testing.T, s *Service, node Caller, res apitypes.NodeComplete) *apitypes.NodeTask {
	t.Helper()
	nt := claimNow(t, s, node)
	if nt == nil {
		t.Fatal("no task to claim")
	}
	if err := s.Complete(context.Background(), node, nt.Task.ID, res); err != nil {
		t.Fatal(err)
	}
	return nt
}

func TestRepositoryLifecycle(t *testing.T) {
	s, admin, node := newRepoTestService(t)
	ctx := context.Background()
	if _, err := s.CreateRepository(ctx, admin, apitypes.RepositoryCreate{Name: "main", URL: "relative/dir"}); core.KindOf(err) != core.KindInvalid {
		t.Fatalf("relative url: %v", err)
	}
	if _, err := s.CreateRepository(ctx, admin, apitypes.RepositoryCreate{Name: "Bad Name", URL: "/srv/r"}); core.KindOf(err) != core.KindInvalid {
		t.Fatalf("bad name: %v", err)
	}
	if _, err := s.CreateRepository(ctx, admin, apitypes.RepositoryCreate{Name: "m", URL: "/srv/r", S3AccessKey: "k", S3SecretKey: "s"}); core.KindOf(err) != core.KindInvalid {
		t.Fatalf("S3 keys on a directory: %v", err)
	}
	if _, err := s.CreateRepository(ctx, admin, apitypes.RepositoryCreate{Name: "m", URL: "s3:http://127.0.0.1:9/bkt", S3AccessKey: "k"}); core.KindOf(err) != core.KindInvalid {
		t.Fatalf("half the S3 keys: %v", err)
	}
	task, err := s.CreateRepository(ctx, admin, apitypes.RepositoryCreate{Name: "main", URL: "/srv/main"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyRepository(ctx, admin, "main", apitypes.RepositoryVerify{}); core.CodeOf(err) != "not_ready" {
		t.Fatalf("verify while creating: %v", err)
	}
	if _, err := s.CreateRepository(ctx, admin, apitypes.RepositoryCreate{Name: "main", URL: "/srv/other"}); core.CodeOf(err) != "name_taken" {
		t.Fatalf("same name: %v", err)
	}
	if _, err := s.CreateRepository(ctx, admin, apitypes.RepositoryCreate{Name: "again", URL: "/srv/main"}); core.CodeOf(err) != "url_taken" {
		t.Fatalf("same url: %v", err)
	}
	nt := completeNext(t, s, node, apitypes.NodeComplete{Result: map[string]string{"same_disk": "true"}})
	if nt.Task.ID != task.ID || nt.Plan.Repository == nil || len(nt.Plan.Repository.Password) < 32 || nt.Plan.Repository.Adopt {
		t.Fatalf("init plan: %+v", nt.Plan)
	}
	r, err := s.GetRepository(ctx, admin, "main", true)
	if err != nil {
		t.Fatal(err)
	}
	if r.State != apitypes.RepositoryReady || !r.Default || !r.SameDisk || r.Password != nt.Plan.Repository.Password {
		t.Fatalf("repository after init: %+v", r)
	}
	// The password is stored sealed, never in the clear.
	s.db.View(ctx, func(tx *meta.Tx) error {
		row, err := tx.RepositoryByName(ctx, admin.ProjectID, "main")
		if err != nil || row.Secrets == "" || strings.Contains(row.Secrets, r.Password) {
			t.Fatalf("stored secrets %q (%v)", row.Secrets, err)
		}
		return nil
	})

	// A second repository asked to be default takes over once ready; a
	// failed one disappears and leaves the default alone.
	if _, err := s.CreateRepository(ctx, admin, apitypes.RepositoryCreate{Name: "broken", URL: "/srv/broken", Default: true}); err != nil {
		t.Fatal(err)
	}
	completeNext(t, s, node, apitypes.NodeComplete{Error: "disk on fire", ErrorCode: "node_error"})
	if _, err := s.GetRepository(ctx, admin, "broken", false); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("failed repository still there: %v", err)
	}
	if r, _ := s.GetRepository(ctx, admin, "main", false); !r.Default {
		t.Fatal("a failed create took the default away")
	}
	if _, err := s.CreateRepository(ctx, admin, apitypes.RepositoryCreate{Name: "offsite", URL: "s3:http://127.0.0.1:9/bucket", Default: true,
		S3AccessKey: "AK", S3SecretKey: "SK", S3Region: "eu"}); err != nil {
		t.Fatal(err)
	}
	nt = completeNext(t, s, node, apitypes.NodeComplete{})
	if p := nt.Plan.Repository; p.S3AccessKey != "AK" || p.S3SecretKey != "SK" || p.S3Region != "eu" {
		t.Fatalf("S3 plan: %+v", p)
	}
	main, _ := s.GetRepository(ctx, admin, "main", false)
	off, _ := s.GetRepository(ctx, admin, "offsite", false)
	if main.Default || !off.Default || !off.HasS3Keys || off.SameDisk {
		t.Fatalf("defaults: main %+v offsite %+v", main, off)
	}

	// Prunes coalesce: a second request while one waits returns it.
	p1, err := s.PruneRepository(ctx, admin, "main")
	if err != nil {
		t.Fatal(err)
	}
	p2, err := s.PruneRepository(ctx, admin, "main")
	if err != nil || p2.ID != p1.ID {
		t.Fatalf("second prune %v %v, want the queued %s", p2.ID, err, p1.ID)
	}
	completeNext(t, s, node, apitypes.NodeComplete{Result: map[string]string{"bytes_freed": "42"}})
	if p3, _ := s.PruneRepository(ctx, admin, "main"); p3.ID == p1.ID {
		t.Fatal("a prune after the first ran was coalesced into it")
	}

	// Verify: bounds, and a failure keeps what was counted.
	if _, err := s.VerifyRepository(ctx, admin, "main", apitypes.RepositoryVerify{ReadDataPercent: 101}); core.KindOf(err) != core.KindInvalid {
		t.Fatalf("101%%: %v", err)
	}
	claimNow(t, s, node) // the third prune
	v, err := s.VerifyRepository(ctx, admin, "main", apitypes.RepositoryVerify{ReadDataPercent: 10})
	if err != nil {
		t.Fatal(err)
	}
	nt = claimNow(t, s, node)
	if nt.Task.ID != v.ID || nt.Plan.Repository.ReadData != 10 {
		t.Fatalf("verify plan: %+v", nt.Plan)
	}
	if err := s.Complete(ctx, node, nt.Task.ID, apitypes.NodeComplete{Error: "damaged", ErrorCode: "corrupt", Result: map[string]string{"problems": "1"}}); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetTask(ctx, admin, v.ID, 0)
	if got.State != apitypes.TaskFailed || got.ErrorCode != "corrupt" || got.Result["problems"] != "1" {
		t.Fatalf("failed verify: %+v", got)
	}

	// Passwords are for admins; other projects see nothing.
	other := admin
	other.ProjectID, other.ProjectName = "no-such-project-id", "other"
	if _, err := s.GetRepository(ctx, other, "main", false); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("another project: %v", err)
	}
	op := admin
	op.Role = apitypes.RoleOperator
	if _, err := s.GetRepository(ctx, op, "main", true); core.KindOf(err) != core.KindForbidden {
		t.Fatalf("operator reveal: %v", err)
	}
	if r, err := s.GetRepository(ctx, op, "main", false); err != nil || r.Password != "" {
		t.Fatalf("operator show: %+v %v", r, err)
	}
}

func TestSecretsBoundToTheirRepository(t *testing.T) {
	s, _, _ := newRepoTestService(t)
	sealed, err := s.sealSecrets("repo-a", repositorySecrets{Password: "pw"})
	if err != nil {
		t.Fatal(err)
	}
	if sec, err := s.openSecrets(meta.Repository{ID: "repo-a", Secrets: sealed}); err != nil || sec.Password != "pw" {
		t.Fatalf("open: %+v %v", sec, err)
	}
	if _, err := s.openSecrets(meta.Repository{ID: "repo-b", Secrets: sealed}); core.KindOf(err) != core.KindCorrupt {
		t.Fatalf("secrets of another repository opened: %v", err)
	}
	s.cfg.SecretKey = make([]byte, 32)
	if _, err := s.openSecrets(meta.Repository{ID: "repo-a", Secrets: sealed}); core.KindOf(err) != core.KindCorrupt {
		t.Fatalf("another server key opened the secrets: %v", err)
	}
	for _, bad := range []string{"", "v1:", "v1:!!!", "v2:abcd", "v1:AAAA"} {
		if _, err := s.openSecrets(meta.Repository{ID: "repo-a", Secrets: bad}); core.KindOf(err) != core.KindCorrupt {
			t.Fatalf("secrets %q: %v", bad, err)
		}
	}
	s.cfg.SecretKey = nil
	if _, err := s.sealSecrets("x", repositorySecrets{}); err == nil {
		t.Fatal("sealed without a key")
	}
}
