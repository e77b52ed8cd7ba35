package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/cairn-backup/cairn/internal/atomicfile"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/cairn-backup/cairn/internal/core"
)

// config is the file `cairn login` writes.
type config struct {
	Server  string `json:"server"`
	Token   string `json:"token"`
	Project string `json:"project,omitempty"`
}

// configPath is $XDG_CONFIG_HOME/cairn/config.json, or ~/.config/cairn/config.json.
func configPath() (string, error) {
	dir := os.Getenv("XDG_CONFIG_HOME")
	if dir == "" || !filepath.IsAbs(dir) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the config directory: %w", err)
		}
		dir = filepath.Join(home, ".config")
	}
	return filepath.Join(dir, "cairn", "config.json"), nil
}

// loadConfig reads the config file; a missing file is an empty config.
func loadConfig() (config, error) {
	var c config
	path, err := configPath()
	if err != nil {
		return c, nil // no home: nothing to read
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read config: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, core.Invalid("config file %s is not valid JSON (%v): fix it or run `cairn logout`", path, err)
	}
	return c, nil
}

// saveConfig writes the config file atomically with mode 0600.
func saveConfig(c config) (string, error) {
	path, err := configPath()
	if err != nil {
		return "", err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("save config: %w", err)
	}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return "", err
	}
	if err := atomicfile.Write(path, append(b, '\n'), 0o600); err != nil {
		return "", fmt.Errorf("save config: %w", err)
	}
	return path, nil
}

func (a *app) loginCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "login --server URL --token TOKEN [--project P]",
		Short: "Check a token and save it, with the server and project, in the config file",
		Args:  cobra.NoArgs,
		RunE: a.run(func(ctx context.Context, _ []string) error {
			s, err := a.resolve(false)
			if err != nil {
				return err
			}
			if s.token == "" {
				return core.Invalid("give the token with --token (or %s)", EnvToken)
			}
			who, err := newClient(s).Whoami(ctx)
			if err != nil {
				return fmt.Errorf("check the token with %s: %w", s.server, err)
			}
			path, err := saveConfig(config{Server: s.server, Token: s.token, Project: s.project})
			if err != nil {
				return err
			}
			return a.print(who, func() {
				fmt.Fprintf(a.stdout, "logged in to %s with token %s (role %s, project %s); saved in %s\n",
					s.server, who.Token.Name, who.Token.Role, who.Project.Name, path)
			})
		}),
	}
}

func (a *app) logoutCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Remove the saved config file",
		Args:  cobra.NoArgs,
		RunE: a.run(func(ctx context.Context, _ []string) error {
			path, err := configPath()
			if err != nil {
				return err
			}
			err = os.Remove(path)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				if !a.json() {
					fmt.Fprintln(a.stdout, "not logged in")
				}
				return nil
			case err != nil:
				return fmt.Errorf("logout: %w", err)
			}
			if !a.json() {
				fmt.Fprintf(a.stdout, "logged out (removed %s)\n", path)
			}
			return nil
		}),
	}
}
