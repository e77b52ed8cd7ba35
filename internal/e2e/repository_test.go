package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/client"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/testenv"
)

// waitRepositoryReady waits for a repository the server is creating.
func waitRepositoryReady(t *testing.T, c *client.Client, name string) apitypes.Repository {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		r, err := c.GetRepository(testCtx(t), name, false)
		if err == nil && r.State == apitypes.RepositoryReady {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("repository %s not ready: %+v %v", name, r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRepositories drives the server's repositories with the real server,
// node, file system and S3 server: the embedded default, an S3 repository,
// verify and prune as tasks, the password an admin can read and that
// `cairn repo` alone opens the repository with, damage found (exit 7), and
// the errors of bad requests.
func TestRepositories(t *testing.T) {
	srv := startServer(t, serverOpts{})
	c := srv.Client(t)
	ctx := testCtx(t)

	// The embedded default: DATA/repository, default, on the volumes' disk.
	def := waitRepositoryReady(t, c, "default")
	if def.URL != filepath.Join(srv.Data, "repository") || !def.Default || !def.SameDisk || def.Password != "" {
		t.Fatalf("default repository: %+v", def)
	}
	withPW, err := c.GetRepository(ctx, "default", true)
	if err != nil || len(withPW.Password) < 32 {
		t.Fatalf("reveal: %+v %v", withPW, err)
	}
	// `cairn repo` opens it with the revealed password, without the server.
	local := newRepoEnv(t, def.URL)
	local.env[1] = "CAIRN_PASSWORD=" + withPW.Password
	img := filepath.Join(t.TempDir(), "disk.raw")
	randomImage(t, img, 8<<20, 3)
	local.ok("backup", "--image", img)
	if bs := local.backups(); len(bs) != 1 {
		t.Fatalf("backups: %+v", bs)
	}
	out := cliOK(t, srv, "repository", "verify", "default", "--read-data")
	if !strings.Contains(out, "no problems (1 backups") {
		t.Fatalf("verify: %s", out)
	}
	var pr apitypes.Task
	cliJSON(t, srv, &pr, "repository", "prune", "default")
	if pr.State != apitypes.TaskSucceeded || pr.Result["bytes_freed"] == "" {
		t.Fatalf("prune: %+v", pr)
	}

	// Damage is found and named: exit 7.
	biggest := biggestPack(t, def.URL)
	f, err := os.OpenFile(biggest, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	b := []byte{0}
	f.ReadAt(b, 100)
	b[0] ^= 0x10
	f.WriteAt(b, 100)
	f.Close()
	_, errs, code := cli(t, srv, "repository", "verify", "default", "--read-data")
	if code != 7 || !strings.Contains(errs, "CRC32C mismatch") || !strings.Contains(errs, "needed by backups") {
		t.Fatalf("verify of a damaged repository: exit %d\n%s", code, errs)
	}

	// An S3 repository, its credentials kept by the server.
	s3 := testenv.StartS3(t)
	url := "s3:http://" + s3.Endpoint + "/" + s3.Bucket + "/cairn"
	waitOK(t, c)(c.CreateRepository(ctx, apitypes.RepositoryCreate{Name: "offsite", URL: url, Default: true,
		S3AccessKey: s3.AccessKey, S3SecretKey: s3.SecretKey}))
	off, err := c.GetRepository(ctx, "offsite", true)
	if err != nil || !off.Default || off.SameDisk || !off.HasS3Keys || off.State != apitypes.RepositoryReady {
		t.Fatalf("S3 repository: %+v %v", off, err)
	}
	if d, _ := c.GetRepository(ctx, "default", false); d.Default {
		t.Fatal("two default repositories")
	}
	remote := newRepoEnv(t, url, "AWS_ACCESS_KEY_ID="+s3.AccessKey, "AWS_SECRET_ACCESS_KEY="+s3.SecretKey)
	remote.env[1] = "CAIRN_PASSWORD=" + off.Password
	remote.ok("backup", "--image", img)
	waitOK(t, c)(c.VerifyRepository(ctx, "offsite", apitypes.RepositoryVerify{ReadDataPercent: 100}))

	// Bad requests.
	_, errs, code = cli(t, srv, "repository", "create", "x", "--url", "relative/dir")
	if code != 2 || !strings.Contains(errs, "absolute directory") {
		t.Fatalf("relative url: exit %d %s", code, errs)
	}
	_, errs, code = cli(t, srv, "repository", "create", "default", "--url", filepath.Join(t.TempDir(), "r"))
	if code != 4 || !strings.Contains(errs, "name_taken") {
		t.Fatalf("same name: exit %d %s", code, errs)
	}
	_, errs, code = cli(t, srv, "repository", "create", "again", "--url", def.URL)
	if code != 4 || !strings.Contains(errs, "url_taken") {
		t.Fatalf("same url: exit %d %s", code, errs)
	}
	// Adopting with a wrong password fails and leaves nothing behind.
	other := filepath.Join(t.TempDir(), "other")
	theirs := newRepoEnv(t, other)
	theirs.ok("init")
	pwFile := filepath.Join(t.TempDir(), "pw")
	os.WriteFile(pwFile, []byte("not the password\n"), 0o600)
	_, errs, code = cli(t, srv, "repository", "create", "theirs", "--url", other, "--password-file", pwFile)
	if code != 5 || !strings.Contains(errs, "wrong password") {
		t.Fatalf("adopt with a wrong password: exit %d %s", code, errs)
	}
	if _, err := c.GetRepository(ctx, "theirs", false); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("a failed adopt left a repository: %v", err)
	}
	os.WriteFile(pwFile, []byte("e2e password\n"), 0o600)
	cliOK(t, srv, "repository", "create", "theirs", "--url", other, "--password-file", pwFile)
	// The same directory spelled another way is the same repository.
	_, errs, code = cli(t, srv, "repository", "create", "clash", "--url", srv.Data+"/../"+filepath.Base(srv.Data)+"/repository/")
	if code != 4 || !strings.Contains(errs, "url_taken") {
		t.Fatalf("same url spelled otherwise: exit %d %s", code, errs)
	}
	// Creating where a repository already is, without its password: refused.
	mine := filepath.Join(t.TempDir(), "mine")
	newRepoEnv(t, mine).ok("init")
	_, errs, code = cli(t, srv, "repository", "create", "clash", "--url", mine)
	if code != 5 || !strings.Contains(errs, "already exists") {
		t.Fatalf("create over an existing repository: exit %d %s", code, errs)
	}

	// Other projects see nothing; only admins read passwords.
	if _, err := c.CreateProject(ctx, apitypes.ProjectCreate{Name: "beta"}); err != nil {
		t.Fatal(err)
	}
	tok := func(project, role string) *client.Client {
		k, err := c.CreateToken(ctx, apitypes.TokenCreate{Name: role + "-" + project, Project: project, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		return client.New(srv.URL, k.Secret, client.WithHTTPClient(validatingHTTP(t)))
	}
	beta, op := tok("beta", "operator"), tok("default", "operator")
	if _, err := beta.GetRepository(ctx, def.ID, false); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("another project reads the repository: %v", err)
	}
	if _, err := beta.PruneRepository(ctx, "default"); core.KindOf(err) != core.KindNotFound {
		t.Fatalf("another project prunes the repository: %v", err)
	}
	if rs, err := beta.AllRepositories(ctx); err != nil || len(rs) != 0 {
		t.Fatalf("another project lists %d repositories (%v)", len(rs), err)
	}
	if _, err := op.GetRepository(ctx, "default", true); core.KindOf(err) != core.KindForbidden {
		t.Fatalf("an operator reads the password: %v", err)
	}

	// The secrets survive a restart (the server's key is in its data directory).
	srv.Stop()
	srv2 := startServer(t, serverOpts{data: srv.Data})
	c2 := srv2.Client(t)
	if r, err := c2.GetRepository(ctx, "offsite", true); err != nil || r.Password != off.Password {
		t.Fatalf("after a restart: %+v %v", r, err)
	}
	if rs, err := c2.AllRepositories(ctx); err != nil || len(rs) != 3 {
		t.Fatalf("after a restart, %d repositories (%v); the default must not be made twice", len(rs), err)
	}
}
