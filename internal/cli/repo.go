package cli

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"golang.org/x/term"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/blob"
	"github.com/cairn-backup/cairn/internal/blob/location"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/repo"
	"github.com/cairn-backup/cairn/internal/repo/format"
)

// Environment variables of `cairn repo`.
const (
	EnvRepo         = "CAIRN_REPO"
	EnvPassword     = "CAIRN_PASSWORD"
	EnvPasswordFile = "CAIRN_PASSWORD_FILE"
)

// repoApp holds the flags shared by the `cairn repo` commands.
type repoApp struct {
	*app
	location     string
	passwordFile string
	lockWait     time.Duration
	accessKey    string
	secretKey    string
	region       string
	connections  int
	noLock       bool // --no-lock of the commands that only read
}

// repoCommand is `cairn repo`: the repository engine without a server, also
// the disaster-recovery tool.
func (a *app) repoCommand() *cobra.Command {
	ra := &repoApp{app: a}
	cmd := groupCommand("repo", "Work on a backup repository directly (no server needed)")
	f := cmd.PersistentFlags()
	f.StringVarP(&ra.location, "repo", "r", "", "repository: a directory or s3:http[s]://HOST[:PORT]/BUCKET[/PREFIX] (env "+EnvRepo+")")
	f.StringVar(&ra.passwordFile, "password-file", "", "read the password from this file (env "+EnvPasswordFile+"; or "+EnvPassword+", or a prompt)")
	f.DurationVar(&ra.lockWait, "lock-wait", 0, "wait this long for a conflicting lock (e.g. 10m)")
	f.StringVar(&ra.accessKey, "s3-access-key", "", "S3 access key (default AWS_ACCESS_KEY_ID)")
	f.StringVar(&ra.secretKey, "s3-secret-key", "", "S3 secret key (default AWS_SECRET_ACCESS_KEY)")
	f.StringVar(&ra.region, "s3-region", "", "S3 region (default AWS_REGION, else asked from the server)")
	f.IntVar(&ra.connections, "s3-connections", 0, "concurrent S3 requests (default 8)")
	// The root's server flags mean nothing here: hide them from the help
	// and refuse them, rather than ignore them.
	defaultHelp := cmd.HelpFunc()
	cmd.SetHelpFunc(func(c *cobra.Command, args []string) {
		defer hideFlags(a.root.PersistentFlags(), serverFlags)()
		defaultHelp(c, args)
	})
	cmd.PersistentPreRunE = func(c *cobra.Command, _ []string) error {
		for _, name := range serverFlags {
			if a.root.PersistentFlags().Changed(name) {
				return core.Invalid("--%s has no effect on `cairn repo`, which works on the repository directly, without a server", name)
			}
		}
		return nil
	}
	cmd.AddCommand(
		ra.initCommand(), ra.backupCommand(), ra.backupsCommand(), ra.lsCommand(), ra.restoreCommand(), ra.exportCommand(), ra.filesCommand(),
		ra.catCommand(), ra.verifyCommand(), ra.forgetCommand(), ra.pruneCommand(), ra.statsCommand(),
		ra.keyCommand(), ra.unlockCommand(),
	)
	return cmd
}

// serverFlags are the root's flags that only commands talking to a server
// use.
var serverFlags = []string{"server", "token", "project", "no-wait"}

// hideFlags hides the named flags of fs and returns the function that shows
// them again.
func hideFlags(fs *pflag.FlagSet, names []string) func() {
	var hidden []*pflag.Flag
	for _, name := range names {
		if f := fs.Lookup(name); f != nil && !f.Hidden {
			f.Hidden = true
			hidden = append(hidden, f)
		}
	}
	return func() {
		for _, f := range hidden {
			f.Hidden = false
		}
	}
}

func (ra *repoApp) where() (string, error) {
	loc := ra.location
	if loc == "" {
		loc = os.Getenv(EnvRepo)
	}
	if loc == "" {
		return "", core.Invalid("no repository given: use --repo or " + EnvRepo)
	}
	return loc, nil
}

// localRoot returns the absolute directory of a local repository, or "".
func (ra *repoApp) localRoot() string {
	loc, err := ra.where()
	if err != nil {
		return ""
	}
	kind, dir, err := location.Parse(loc)
	if err != nil || kind != location.Local {
		return ""
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return ""
	}
	return abs
}

// openStore opens the blob store of the repository location.
func (ra *repoApp) openStore(ctx context.Context, create bool) (blob.Store, string, error) {
	loc, err := ra.where()
	if err != nil {
		return nil, "", err
	}
	store, err := location.Open(ctx, loc, location.Options{
		AccessKey: ra.accessKey, SecretKey: ra.secretKey, Region: ra.region,
		Connections: ra.connections, Create: create,
	})
	if err != nil {
		return nil, "", fmt.Errorf("opening repository %s: %w", loc, err)
	}
	return store, loc, nil
}

// password reads the password: --password-file, CAIRN_PASSWORD_FILE,
// CAIRN_PASSWORD, or a prompt on the terminal (twice when confirm).
func (ra *repoApp) password(prompt string, confirm bool) ([]byte, error) {
	file := ra.passwordFile
	if file == "" {
		file = os.Getenv(EnvPasswordFile)
	}
	if file != "" {
		b, err := os.ReadFile(file)
		if err != nil {
			return nil, core.Invalid("reading the password file: %v", err)
		}
		p := strings.TrimRight(string(b), "\r\n")
		if p == "" {
			return nil, core.Invalid("the password file %s is empty", file)
		}
		return []byte(p), nil
	}
	if p := os.Getenv(EnvPassword); p != "" {
		return []byte(p), nil
	}
	return promptPassword(prompt, confirm)
}

func promptPassword(prompt string, confirm bool) ([]byte, error) {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil, core.Invalid("no password: set %s or %s, use --password-file, or run on a terminal", EnvPassword, EnvPasswordFile)
	}
	defer tty.Close()
	read := func(p string) ([]byte, error) {
		fmt.Fprint(tty, p)
		defer fmt.Fprintln(tty)
		if term.IsTerminal(int(tty.Fd())) {
			return term.ReadPassword(int(tty.Fd()))
		}
		line, err := bufio.NewReader(tty).ReadString('\n')
		return []byte(strings.TrimRight(line, "\r\n")), err
	}
	p, err := read(prompt)
	if err != nil {
		return nil, fmt.Errorf("reading the password: %w", err)
	}
	if len(p) == 0 {
		return nil, core.Invalid("the password is empty")
	}
	if confirm {
		q, err := read("Enter it again: ")
		if err != nil {
			return nil, fmt.Errorf("reading the password: %w", err)
		}
		if string(p) != string(q) {
			return nil, core.Invalid("the passwords do not match")
		}
	}
	return p, nil
}

// open opens and unlocks the repository; with index it also loads the index.
func (ra *repoApp) open(ctx context.Context, index bool) (*repo.Repository, error) {
	store, loc, err := ra.openStore(ctx, false)
	if err != nil {
		return nil, err
	}
	// Refuse a newer format before asking for a password.
	if _, err := repo.ReadConfig(ctx, store); err != nil {
		store.Close()
		return nil, fmt.Errorf("%s: %w", loc, err)
	}
	pw, err := ra.password("Repository password: ", false)
	if err != nil {
		store.Close()
		return nil, err
	}
	r, err := repo.Open(ctx, store, pw, repo.Options{LockWait: ra.lockWait})
	if err != nil {
		store.Close()
		return nil, err
	}
	if index {
		if err := r.LoadIndex(ctx); err != nil {
			r.Close()
			return nil, err
		}
	}
	return r, nil
}

// lockMode is how a command locks the repository.
type lockMode int

const (
	lockShared    lockMode = iota // it adds to the repository: backup, forget
	lockExclusive                 // it removes from it: prune
	lockReading                   // it only reads: shared, or no lock with --no-lock
)

// locked opens the repository, locks it as mode says and runs body.
func (ra *repoApp) locked(ctx context.Context, mode lockMode, command string, body func(r *repo.Repository) error) error {
	r, err := ra.open(ctx, false)
	if err != nil {
		return err
	}
	defer r.Close()
	if mode != lockReading || !ra.noLock {
		lock, err := r.Lock(ctx, mode == lockExclusive, command)
		if err != nil {
			if mode == lockReading && cannotWrite(err) {
				return fmt.Errorf("%w\n%s only reads the repository: run it with --no-lock, while no prune runs", err, command)
			}
			return err
		}
		defer lock.Release()
	}
	if err := r.LoadIndex(ctx); err != nil {
		return err
	}
	return body(r)
}

// cannotWrite reports whether err says that the repository cannot be
// written with these credentials or on this file system.
func cannotWrite(err error) bool {
	return errors.Is(err, syscall.EROFS) || errors.Is(err, fs.ErrPermission) || core.KindOf(err) == core.KindUnauthorized
}

// addNoLock adds --no-lock to a command that only reads.
func (ra *repoApp) addNoLock(cmd *cobra.Command) {
	cmd.Flags().BoolVar(&ra.noLock, "no-lock", false,
		"do not lock the repository, to read it from a read-only disk or with read-only credentials (no prune may run meanwhile)")
}

func (ra *repoApp) initCommand() *cobra.Command {
	var chunk string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a repository",
		Args:  cobra.NoArgs,
	}
	cmd.Flags().StringVar(&chunk, "image-chunk-size", "", "chunk size of disk image backups, 64K to 256K (default 128K)")
	cmd.RunE = ra.run(func(ctx context.Context, _ []string) error {
		var opts repo.InitOptions
		if chunk != "" {
			n, err := core.ParseSize(chunk)
			if err != nil {
				return err
			}
			if n < 64<<10 || n > 256<<10 || n&(n-1) != 0 {
				return core.Invalid("--image-chunk-size %s: use 64K, 128K or 256K", chunk)
			}
			opts.ImageChunkSize = int(n)
		}
		store, loc, err := ra.openStore(ctx, true)
		if err != nil {
			return err
		}
		defer store.Close()
		// Before asking for a password twice: a repository is there already.
		if _, err := store.Stat(ctx, format.ConfigName); err == nil {
			return core.Conflict("exists", "a repository already exists at %s", loc)
		}
		pw, err := ra.password("Password for the new repository: ", true)
		if err != nil {
			return err
		}
		r, err := repo.Init(ctx, store, pw, opts, repo.Options{})
		if err != nil {
			return fmt.Errorf("creating a repository at %s: %w", loc, err)
		}
		cfg := r.Config()
		out := map[string]any{"id": cfg.ID, "location": loc, "version": cfg.Version, "key_id": r.KeyID(),
			"image_chunk_size": cfg.ImageChunkSize}
		return ra.print(out, func() {
			fmt.Fprintf(ra.stdout, "created repository %s at %s\n", cfg.ID, loc)
			fmt.Fprintln(ra.stdout, "Keep the password safe: without it the backups cannot be read.")
		})
	})
	return cmd
}

func (ra *repoApp) keyCommand() *cobra.Command {
	cmd := groupCommand("key", "Manage the repository's passwords")
	var newFile string
	add := &cobra.Command{Use: "add", Short: "Add a password", Args: cobra.NoArgs}
	add.Flags().StringVar(&newFile, "new-password-file", "", "read the new password from this file (else a prompt)")
	add.RunE = ra.run(func(ctx context.Context, _ []string) error {
		r, err := ra.open(ctx, false)
		if err != nil {
			return err
		}
		defer r.Close()
		var pw []byte
		if newFile != "" {
			b, err := os.ReadFile(newFile)
			if err != nil {
				return core.Invalid("reading the new password file: %v", err)
			}
			pw = []byte(strings.TrimRight(string(b), "\r\n"))
		} else if pw, err = promptPassword("New password: ", true); err != nil {
			return err
		}
		id, err := r.AddKey(ctx, pw)
		if err != nil {
			return err
		}
		return ra.print(map[string]string{"id": id}, func() { fmt.Fprintf(ra.stdout, "added key %s\n", id) })
	})
	list := &cobra.Command{Use: "list", Short: "List the keys", Args: cobra.NoArgs}
	list.RunE = ra.run(func(ctx context.Context, _ []string) error {
		r, err := ra.open(ctx, false)
		if err != nil {
			return err
		}
		defer r.Close()
		keys, err := r.Keys(ctx)
		if err != nil {
			return err
		}
		return ra.print(keys, func() {
			rows := [][]string{}
			for _, k := range keys {
				cur := ""
				if k.Current {
					cur = "*"
				}
				rows = append(rows, []string{cur + k.ID, showTime(k.Created), orDash(k.Username), orDash(k.Host)})
			}
			table(ra.stdout, []string{"ID", "CREATED", "USER", "HOST"}, rows)
		})
	})
	remove := &cobra.Command{Use: "remove KEY", Short: "Remove a key (not the one in use, not the last)", Args: cobra.ExactArgs(1)}
	remove.RunE = ra.run(func(ctx context.Context, args []string) error {
		r, err := ra.open(ctx, false)
		if err != nil {
			return err
		}
		defer r.Close()
		if err := r.RemoveKey(ctx, args[0]); err != nil {
			return err
		}
		return ra.print(map[string]string{"removed": args[0]}, func() { fmt.Fprintf(ra.stdout, "removed key %s\n", args[0]) })
	})
	cmd.AddCommand(add, list, remove)
	return cmd
}

func (ra *repoApp) unlockCommand() *cobra.Command {
	var all bool
	cmd := &cobra.Command{Use: "unlock", Short: "Remove stale locks (of dead processes, or older than 30 minutes)", Args: cobra.NoArgs}
	cmd.Flags().BoolVar(&all, "all", false, "remove every lock, also live ones (only when no other cairn works on the repository)")
	cmd.RunE = ra.run(func(ctx context.Context, _ []string) error {
		r, err := ra.open(ctx, false)
		if err != nil {
			return err
		}
		defer r.Close()
		removed, err := r.Unlock(ctx, all)
		if err != nil {
			return err
		}
		if removed == nil {
			removed = []string{}
		}
		return ra.print(removed, func() { fmt.Fprintf(ra.stdout, "removed %s\n", plural(len(removed), "lock", "locks")) })
	})
	return cmd
}

// backupOf converts a manifest to the API's Backup.
func backupOf(m *format.Manifest) apitypes.Backup {
	b := apitypes.Backup{ID: m.ID, Kind: m.Kind, CreatedAt: m.Time, Host: m.Host, Paths: m.Paths, Tags: m.Tags,
		ParentBackupID: m.Parent, BytesRead: m.Summary.BytesRead, BytesAdded: m.Summary.BytesAdded, Files: m.Summary.Files,
		SkippedEntries: m.Summary.Errors, DurationMS: m.Summary.End.Sub(m.Summary.Start).Milliseconds()}
	if b.Tags == nil {
		b.Tags = []string{}
	}
	if m.Image != nil {
		b.LogicalSize = m.Image.Size
	} else {
		b.LogicalSize = m.Summary.Bytes
	}
	return b
}

// repoProgress draws a bar for engine progress on a terminal.
func (ra *repoApp) repoProgress(desc string) (func(repo.Progress), func()) {
	p := ra.newProgress(desc)
	if p == nil {
		return nil, func() {}
	}
	return func(pr repo.Progress) {
		p.update(apitypes.Task{State: "running", BytesDone: pr.Done, BytesTotal: pr.Total})
	}, p.finish
}
