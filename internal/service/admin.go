package service

import (
	"context"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
)

func projectJSON(p meta.Project) apitypes.Project {
	return apitypes.Project{ID: p.ID, Name: p.Name, CreatedAt: p.CreatedAt}
}

// Whoami returns the caller's token and acting project.
func (s *Service) Whoami(ctx context.Context, c Caller) (apitypes.Whoami, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.Whoami{}, err
	}
	var out apitypes.Whoami
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		tok, err := tx.TokenByID(ctx, c.TokenID)
		if err != nil {
			return err
		}
		home, err := tx.ProjectByID(ctx, tok.ProjectID)
		if err != nil {
			return err
		}
		acting, err := tx.ProjectByID(ctx, c.ProjectID)
		if err != nil {
			return err
		}
		out = apitypes.Whoami{Token: tokenJSON(tok, home.Name), Project: projectJSON(acting)}
		return nil
	})
	return out, err
}

// ListProjects lists every project (admin) or the caller's own.
func (s *Service) ListProjects(ctx context.Context, c Caller, pg Page) (apitypes.List[apitypes.Project], error) {
	if err := c.requireUser(); err != nil {
		return apitypes.List[apitypes.Project]{}, err
	}
	var out apitypes.List[apitypes.Project]
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		if !c.IsAdmin() {
			p, err := tx.ProjectByID(ctx, c.ProjectID)
			if err != nil {
				return err
			}
			out = apitypes.List[apitypes.Project]{Items: []apitypes.Project{projectJSON(p)}}
			return nil
		}
		ps, err := tx.Projects(ctx, pg.Cursor, pg.Limit+1)
		if err != nil {
			return err
		}
		out = pageOf(ps, pg.Limit, projectJSON, func(p meta.Project) string { return p.Name })
		return nil
	})
	return out, err
}

// GetProject returns a project the caller may see.
func (s *Service) GetProject(ctx context.Context, c Caller, ref string) (apitypes.Project, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.Project{}, err
	}
	var p meta.Project
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		var err error
		p, err = projectByRef(ctx, tx, ref)
		if err != nil {
			return err
		}
		if !c.IsAdmin() && p.ID != c.ProjectID {
			return core.NotFound("project %q not found", ref)
		}
		return nil
	})
	return projectJSON(p), err
}

// CreateProject makes a new project (admin).
func (s *Service) CreateProject(ctx context.Context, c Caller, req apitypes.ProjectCreate) (apitypes.Project, error) {
	if err := c.requireAdmin(); err != nil {
		return apitypes.Project{}, err
	}
	if err := core.CheckName("project", req.Name); err != nil {
		return apitypes.Project{}, err
	}
	p := meta.Project{ID: core.NewID(), Name: req.Name, CreatedAt: s.now()}
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		if _, err := tx.ProjectByName(ctx, req.Name); err == nil {
			return core.Conflict("name_taken", "a project named %q already exists", req.Name)
		}
		return tx.InsertProject(ctx, p)
	})
	return projectJSON(p), err
}

// DeleteProject removes an empty project and its tokens (admin).
func (s *Service) DeleteProject(ctx context.Context, c Caller, ref string) error {
	if err := c.requireAdmin(); err != nil {
		return err
	}
	return s.db.Update(ctx, func(tx *meta.Tx) error {
		p, err := projectByRef(ctx, tx, ref)
		if err != nil {
			return err
		}
		if p.Name == apitypes.SystemProject || p.Name == apitypes.DefaultProject {
			return core.Conflict("conflict", "project %q is built in and cannot be deleted", p.Name)
		}
		n, err := tx.CountVolumes(ctx, p.ID)
		if err != nil {
			return err
		}
		if n > 0 {
			return core.Conflict("not_empty", "project %q still has %d volumes: delete them first", p.Name, n)
		}
		return tx.DeleteProject(ctx, p.ID)
	})
}

func tokenJSON(k meta.Token, project string) apitypes.Token {
	return apitypes.Token{ID: k.ID, Name: k.Name, Project: project, Role: k.Role, CreatedAt: k.CreatedAt, LastUsed: k.LastUsed}
}

// ListTokens lists the acting project's tokens (admin), or the caller's own.
func (s *Service) ListTokens(ctx context.Context, c Caller, pg Page) (apitypes.List[apitypes.Token], error) {
	if err := c.requireUser(); err != nil {
		return apitypes.List[apitypes.Token]{}, err
	}
	var out apitypes.List[apitypes.Token]
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		if !c.IsAdmin() {
			k, err := tx.TokenByID(ctx, c.TokenID)
			if err != nil {
				return err
			}
			out = apitypes.List[apitypes.Token]{Items: []apitypes.Token{tokenJSON(k, c.ProjectName)}}
			return nil
		}
		ks, err := tx.Tokens(ctx, c.ProjectID, pg.Cursor, pg.Limit+1)
		if err != nil {
			return err
		}
		out = pageOf(ks, pg.Limit, func(k meta.Token) apitypes.Token { return tokenJSON(k, c.ProjectName) }, func(k meta.Token) string { return k.ID })
		return nil
	})
	return out, err
}

// CreateToken makes a token in a project (admin); the answer holds its secret, once.
func (s *Service) CreateToken(ctx context.Context, c Caller, req apitypes.TokenCreate) (apitypes.Token, error) {
	if err := c.requireAdmin(); err != nil {
		return apitypes.Token{}, err
	}
	if err := core.CheckName("token", req.Name); err != nil {
		return apitypes.Token{}, err
	}
	switch req.Role {
	case apitypes.RoleAdmin, apitypes.RoleOperator, apitypes.RoleViewer:
	default:
		return apitypes.Token{}, core.Invalid("invalid role %q: use admin, operator or viewer", req.Role)
	}
	var out apitypes.Token
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		pid, pname := c.ProjectID, c.ProjectName
		if req.Project != "" {
			p, err := projectByRef(ctx, tx, req.Project)
			if err != nil {
				return err
			}
			pid, pname = p.ID, p.Name
		}
		if req.Role == apitypes.RoleAdmin && pname != apitypes.SystemProject {
			return core.Invalid("admin is a role of the system project: create admin tokens with --for-project system")
		}
		if req.Role != apitypes.RoleAdmin && pname == apitypes.SystemProject {
			return core.Invalid("the system project holds admin tokens only")
		}
		secret := NewTokenSecret("cairn_")
		k := meta.Token{ID: core.NewID(), Name: req.Name, ProjectID: pid, Role: req.Role, Hash: HashToken(secret), CreatedAt: s.now()}
		if err := tx.InsertToken(ctx, k); err != nil {
			return err
		}
		out = tokenJSON(k, pname)
		out.Secret = secret
		return nil
	})
	return out, err
}

// DeleteToken revokes a token of the acting project (admin).
func (s *Service) DeleteToken(ctx context.Context, c Caller, id string) error {
	if err := c.requireAdmin(); err != nil {
		return err
	}
	return s.db.Update(ctx, func(tx *meta.Tx) error {
		k, err := tx.TokenByID(ctx, id)
		if meta.IsNoRows(err) || (err == nil && k.ProjectID != c.ProjectID && k.ID != c.TokenID) {
			// An admin may delete tokens of the system project and of the acting project.
			if err == nil {
				if p, perr := tx.ProjectByID(ctx, k.ProjectID); perr == nil && p.Name == apitypes.SystemProject {
					return tx.DeleteToken(ctx, id)
				}
			}
			return core.NotFound("token %q not found", id)
		}
		if err != nil {
			return err
		}
		return tx.DeleteToken(ctx, id)
	})
}

func (s *Service) nodeJSON(n meta.Node) apitypes.Node {
	state := apitypes.NodeOffline
	if n.HeartbeatAt != nil && s.now().Sub(*n.HeartbeatAt) < s.cfg.NodeTimeout {
		state = apitypes.NodeOnline
	}
	return apitypes.Node{ID: n.ID, Name: n.Name, Address: n.Address, State: state, Capacity: n.Capacity, Available: n.Available,
		HeartbeatAt: n.HeartbeatAt, CreatedAt: n.CreatedAt}
}

func nodeByRef(ctx context.Context, tx *meta.Tx, ref string) (meta.Node, error) {
	var n meta.Node
	var err error
	if core.IsUUID(ref) {
		n, err = tx.NodeByID(ctx, ref)
	} else {
		n, err = tx.NodeByName(ctx, ref)
	}
	if meta.IsNoRows(err) {
		return n, core.NotFound("node %q not found", ref)
	}
	return n, err
}

// ListNodes lists nodes (any user role may see them).
func (s *Service) ListNodes(ctx context.Context, c Caller, pg Page) (apitypes.List[apitypes.Node], error) {
	if err := c.requireUser(); err != nil {
		return apitypes.List[apitypes.Node]{}, err
	}
	var out apitypes.List[apitypes.Node]
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		ns, err := tx.Nodes(ctx, pg.Cursor, pg.Limit+1)
		if err != nil {
			return err
		}
		out = pageOf(ns, pg.Limit, s.nodeJSON, func(n meta.Node) string { return n.Name })
		return nil
	})
	return out, err
}

// GetNode returns one node.
func (s *Service) GetNode(ctx context.Context, c Caller, ref string) (apitypes.Node, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.Node{}, err
	}
	var n meta.Node
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		var err error
		n, err = nodeByRef(ctx, tx, ref)
		return err
	})
	return s.nodeJSON(n), err
}

// CreateNode registers a node name and returns its token, once (admin).
func (s *Service) CreateNode(ctx context.Context, c Caller, req apitypes.NodeCreate) (apitypes.Node, error) {
	if err := c.requireAdmin(); err != nil {
		return apitypes.Node{}, err
	}
	if err := core.CheckName("node", req.Name); err != nil {
		return apitypes.Node{}, err
	}
	secret := NewTokenSecret("cairnnode_")
	n := meta.Node{ID: core.NewID(), Name: req.Name, TokenHash: HashToken(secret), CreatedAt: s.now()}
	err := s.db.Update(ctx, func(tx *meta.Tx) error {
		if _, err := tx.NodeByName(ctx, req.Name); err == nil {
			return core.Conflict("name_taken", "a node named %q already exists", req.Name)
		}
		return tx.InsertNode(ctx, n)
	})
	out := s.nodeJSON(n)
	out.Token = secret
	return out, err
}

// DeleteNode forgets a node that holds no volumes (admin).
func (s *Service) DeleteNode(ctx context.Context, c Caller, ref string) error {
	if err := c.requireAdmin(); err != nil {
		return err
	}
	return s.db.Update(ctx, func(tx *meta.Tx) error {
		n, err := nodeByRef(ctx, tx, ref)
		if err != nil {
			return err
		}
		vs, err := tx.VolumesOnNode(ctx, n.ID)
		if err != nil {
			return err
		}
		if len(vs) > 0 {
			return core.Conflict("not_empty", "node %q still holds %d volumes", n.Name, len(vs))
		}
		return tx.DeleteNode(ctx, n.ID)
	})
}

// pickNode resolves the node for a new volume: the one named, else the online
// node with the most free space.
func (s *Service) pickNode(ctx context.Context, tx *meta.Tx, ref string) (meta.Node, error) {
	if ref != "" {
		return nodeByRef(ctx, tx, ref)
	}
	ns, err := tx.Nodes(ctx, "", 1000)
	if err != nil {
		return meta.Node{}, err
	}
	var best *meta.Node
	for i := range ns {
		n := &ns[i]
		online := n.HeartbeatAt != nil && s.now().Sub(*n.HeartbeatAt) < s.cfg.NodeTimeout
		if !online {
			continue
		}
		if best == nil || n.Available > best.Available {
			best = n
		}
	}
	if best == nil {
		if len(ns) == 1 {
			return ns[0], nil
		}
		return meta.Node{}, core.Conflict("no_node", "no node is online to hold the volume: start `cairn node` or pass --node")
	}
	return *best, nil
}

var _ = time.Second
