package filebackup

import (
	"context"
	"errors"
	"fmt"
	"io/fs"

	"github.com/cairn-backup/cairn/internal/repo/format"
)

// LoadTree loads and decodes tree blob id. Errors name the tree.
func LoadTree(ctx context.Context, repo Repository, id format.ID) (*Tree, error) {
	if id.IsZero() {
		return nil, fmt.Errorf("tree: zero id")
	}
	b, err := repo.LoadBlob(ctx, format.TreeBlob, id, nil)
	if err != nil {
		return nil, fmt.Errorf("loading tree %s: %w", id.Short(), err)
	}
	t, err := DecodeTree(b)
	if err != nil {
		return nil, fmt.Errorf("tree %s: %w", id.Short(), err)
	}
	return t, nil
}

// joinPath joins a backup-relative directory path and a name with '/'.
func joinPath(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// Walk calls fn for every node below root, depth first, in name order (a
// directory before its content), with the node's path relative to the root
// ("etc/ssh/sshd_config"). If fn returns fs.SkipDir for a directory, its
// content is skipped; any other error stops the walk and is returned.
func Walk(ctx context.Context, repo Repository, root format.ID, fn func(path string, n *Node) error) error {
	err := walk(ctx, repo, "", root, fn)
	if errors.Is(err, fs.SkipDir) {
		return nil
	}
	return err
}

func walk(ctx context.Context, repo Repository, dir string, id format.ID, fn func(string, *Node) error) error {
	t, err := LoadTree(ctx, repo, id)
	if err != nil {
		if dir != "" {
			return fmt.Errorf("%s: %w", displayPath(dir), err)
		}
		return err
	}
	for _, n := range t.Nodes {
		if err := ctx.Err(); err != nil {
			return err
		}
		p := joinPath(dir, n.Name)
		err := fn(p, n)
		if n.Type == TypeDir && errors.Is(err, fs.SkipDir) {
			continue
		}
		if err != nil {
			return err
		}
		if n.Type == TypeDir {
			if err := walk(ctx, repo, p, n.Subtree, fn); err != nil {
				return err
			}
		}
	}
	return nil
}

// WalkTrees calls fn for every tree blob below and including root, once per
// occurrence (a subtree shared by two directories is visited twice), depth
// first in name order, with the path of the directory it lists ("" for the
// root). If fn returns fs.SkipDir, the directories of that tree are skipped;
// any other error stops the walk and is returned.
func WalkTrees(ctx context.Context, repo Repository, root format.ID, fn func(path string, id format.ID, t *Tree) error) error {
	return walkTrees(ctx, repo, "", root, fn)
}

func walkTrees(ctx context.Context, repo Repository, dir string, id format.ID, fn func(string, format.ID, *Tree) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	t, err := LoadTree(ctx, repo, id)
	if err != nil {
		if dir != "" {
			return fmt.Errorf("%s: %w", displayPath(dir), err)
		}
		return err
	}
	err = fn(dir, id, t)
	if errors.Is(err, fs.SkipDir) {
		return nil
	}
	if err != nil {
		return err
	}
	for _, n := range t.Nodes {
		if n.Type == TypeDir {
			if err := walkTrees(ctx, repo, joinPath(dir, n.Name), n.Subtree, fn); err != nil {
				return err
			}
		}
	}
	return nil
}
