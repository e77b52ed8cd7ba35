package httpapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/service"
)

// Handler serves /v1 and /metrics.
type Handler struct {
	svc     *service.Service
	log     *slog.Logger
	mux     *http.ServeMux
	metrics http.Handler
}

// New builds the API handler. metrics may be nil.
func New(svc *service.Service, log *slog.Logger, metrics http.Handler) *Handler {
	if log == nil {
		log = slog.Default()
	}
	h := &Handler{svc: svc, log: log, mux: http.NewServeMux(), metrics: metrics}
	h.routes()
	return h
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.mux.ServeHTTP(w, r) }

// result is what a handler answers: a status and a body (nil = no body).
type result struct {
	status int
	body   any
}

func ok(v any) (result, error)       { return result{http.StatusOK, v}, nil }
func accepted(v any) (result, error) { return result{http.StatusAccepted, v}, nil }
func created(v any) (result, error)  { return result{http.StatusCreated, v}, nil }
func noContent() (result, error)     { return result{http.StatusNoContent, nil}, nil }

type handlerFunc func(r *http.Request, c service.Caller) (result, error)

// handle registers an authenticated route.
func (h *Handler) handle(pattern string, fn handlerFunc) {
	h.mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		auth := r.Header.Get("Authorization")
		secret, found := strings.CutPrefix(auth, "Bearer ")
		if auth != "" && !found {
			h.writeError(w, r, core.Unauthorized("the Authorization header must be \"Bearer TOKEN\""))
			return
		}
		c, err := h.svc.Authenticate(r.Context(), strings.TrimSpace(secret), r.Header.Get(apitypes.HeaderProject))
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		res, err := fn(r, c)
		if err != nil {
			h.writeError(w, r, err)
			return
		}
		writeJSON(w, res.status, res.body)
		h.log.Debug("request", "method", r.Method, "path", r.URL.Path, "status", res.status, "duration", time.Since(start))
	})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	if body == nil {
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	_ = enc.Encode(body)
}

// statusOf is the one place where an error kind becomes an HTTP status.
func statusOf(err error) int {
	switch core.KindOf(err) {
	case core.KindInvalid:
		return http.StatusBadRequest
	case core.KindNotFound:
		return http.StatusNotFound
	case core.KindConflict:
		return http.StatusConflict
	case core.KindUnauthorized:
		return http.StatusUnauthorized
	case core.KindForbidden:
		return http.StatusForbidden
	case core.KindCorrupt:
		return http.StatusUnprocessableEntity
	}
	return http.StatusInternalServerError
}

func (h *Handler) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status := statusOf(err)
	msg := err.Error()
	if status == http.StatusInternalServerError {
		h.log.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		if errors.Is(err, context.Canceled) {
			msg = "request canceled"
		}
	}
	writeJSON(w, status, apitypes.Error{Code: core.CodeOf(err), Message: msg})
}

// decode reads a JSON body strictly: unknown fields and trailing data are errors.
func decode(r *http.Request, v any) error {
	body := http.MaxBytesReader(nil, r.Body, 1<<20)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return core.Invalid("empty request body: send a JSON object")
		}
		return core.Invalid("invalid JSON body: %v", err)
	}
	if dec.More() {
		return core.Invalid("invalid JSON body: more than one value")
	}
	return nil
}

// decodeOptional is decode for bodies that may be absent.
func decodeOptional(r *http.Request, v any) error {
	if r.ContentLength == 0 {
		return nil
	}
	return decode(r, v)
}

func page(r *http.Request) (service.Page, error) {
	q := r.URL.Query()
	return service.ParsePage(q.Get("limit"), q.Get("cursor"))
}

func boolQuery(r *http.Request, name string) (bool, error) {
	switch v := r.URL.Query().Get(name); v {
	case "", "false", "0":
		return false, nil
	case "true", "1":
		return true, nil
	default:
		return false, core.Invalid("invalid %s=%q: use true or false", name, v)
	}
}

// maxWait bounds ?wait= on task reads.
const maxWait = 60 * time.Second

func waitQuery(r *http.Request) (time.Duration, error) {
	v := r.URL.Query().Get("wait")
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, core.Invalid("invalid wait=%q: give a duration such as 30s", v)
	}
	if d > maxWait {
		d = maxWait
	}
	return d, nil
}

func (h *Handler) routes() {
	s := h.svc
	m := h.mux
	m.HandleFunc("GET /v1/openapi.json", func(w http.ResponseWriter, r *http.Request) {
		doc, err := OpenAPIDocument()
		if err != nil {
			h.writeError(w, r, fmt.Errorf("openapi document: %w", err))
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(doc)
	})
	if h.metrics != nil {
		m.Handle("GET /metrics", h.metrics)
	}
	m.HandleFunc("/v1/", func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, core.NotFound("no such endpoint: %s %s", r.Method, r.URL.Path))
	})

	h.handle("GET /v1/whoami", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.Whoami(r.Context(), c)
		return res(ok, v, err)
	})

	// projects and tokens
	h.handle("GET /v1/projects", func(r *http.Request, c service.Caller) (result, error) {
		pg, err := page(r)
		if err != nil {
			return result{}, err
		}
		v, err := s.ListProjects(r.Context(), c, pg)
		return res(ok, v, err)
	})
	h.handle("POST /v1/projects", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.ProjectCreate
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.CreateProject(r.Context(), c, req)
		return res(created, v, err)
	})
	h.handle("GET /v1/projects/{project}", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.GetProject(r.Context(), c, r.PathValue("project"))
		return res(ok, v, err)
	})
	h.handle("DELETE /v1/projects/{project}", func(r *http.Request, c service.Caller) (result, error) {
		return none(s.DeleteProject(r.Context(), c, r.PathValue("project")))
	})
	h.handle("GET /v1/tokens", func(r *http.Request, c service.Caller) (result, error) {
		pg, err := page(r)
		if err != nil {
			return result{}, err
		}
		v, err := s.ListTokens(r.Context(), c, pg)
		return res(ok, v, err)
	})
	h.handle("POST /v1/tokens", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.TokenCreate
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.CreateToken(r.Context(), c, req)
		return res(created, v, err)
	})
	h.handle("DELETE /v1/tokens/{token}", func(r *http.Request, c service.Caller) (result, error) {
		return none(s.DeleteToken(r.Context(), c, r.PathValue("token")))
	})

	// volumes
	h.handle("GET /v1/volumes", func(r *http.Request, c service.Caller) (result, error) {
		pg, err := page(r)
		if err != nil {
			return result{}, err
		}
		v, err := s.ListVolumes(r.Context(), c, pg)
		return res(ok, v, err)
	})
	h.handle("POST /v1/volumes", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.VolumeCreate
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.CreateVolume(r.Context(), c, req)
		return res(accepted, v, err)
	})
	h.handle("POST /v1/volumes/import", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.VolumeImport
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.ImportVolume(r.Context(), c, req)
		return res(accepted, v, err)
	})
	h.handle("GET /v1/volumes/{volume}", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.GetVolume(r.Context(), c, r.PathValue("volume"))
		return res(ok, v, err)
	})
	h.handle("DELETE /v1/volumes/{volume}", func(r *http.Request, c service.Caller) (result, error) {
		purge, err := boolQuery(r, "purge")
		if err != nil {
			return result{}, err
		}
		v, err := s.DeleteVolume(r.Context(), c, r.PathValue("volume"), purge)
		return res(accepted, v, err)
	})
	h.handle("POST /v1/volumes/{volume}/grow", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.VolumeGrow
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.GrowVolume(r.Context(), c, r.PathValue("volume"), req)
		return res(accepted, v, err)
	})
	h.handle("POST /v1/volumes/{volume}/revert", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.Revert(r.Context(), c, r.PathValue("volume"))
		return res(accepted, v, err)
	})

	// snapshots
	h.handle("GET /v1/volumes/{volume}/snapshots", func(r *http.Request, c service.Caller) (result, error) {
		pg, err := page(r)
		if err != nil {
			return result{}, err
		}
		v, err := s.ListSnapshots(r.Context(), c, r.PathValue("volume"), pg)
		return res(ok, v, err)
	})
	h.handle("POST /v1/volumes/{volume}/snapshots", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.SnapshotCreate
		if err := decodeOptional(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.CreateSnapshot(r.Context(), c, r.PathValue("volume"), req)
		return res(accepted, v, err)
	})
	h.handle("GET /v1/volumes/{volume}/snapshots/{snapshot}", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.GetSnapshot(r.Context(), c, r.PathValue("volume"), r.PathValue("snapshot"))
		return res(ok, v, err)
	})
	h.handle("DELETE /v1/volumes/{volume}/snapshots/{snapshot}", func(r *http.Request, c service.Caller) (result, error) {
		sub, err := boolQuery(r, "subtree")
		if err != nil {
			return result{}, err
		}
		v, err := s.DeleteSnapshot(r.Context(), c, r.PathValue("volume"), r.PathValue("snapshot"), sub)
		return res(accepted, v, err)
	})
	h.handle("POST /v1/volumes/{volume}/snapshots/{snapshot}/apply", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.SnapshotApply
		if err := decodeOptional(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.ApplySnapshot(r.Context(), c, r.PathValue("volume"), r.PathValue("snapshot"), req)
		return res(accepted, v, err)
	})
	h.handle("POST /v1/volumes/{volume}/snapshots/{snapshot}/to-volume", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.SnapshotToVolume
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.SnapshotToVolume(r.Context(), c, r.PathValue("volume"), r.PathValue("snapshot"), req)
		return res(accepted, v, err)
	})

	// exports
	h.handle("GET /v1/volumes/{volume}/exports", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.ListExports(r.Context(), c, r.PathValue("volume"))
		return res(ok, v, err)
	})
	h.handle("POST /v1/volumes/{volume}/exports", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.ExportCreate
		if err := decodeOptional(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.CreateExport(r.Context(), c, r.PathValue("volume"), req)
		return res(accepted, v, err)
	})
	h.handle("GET /v1/volumes/{volume}/exports/{export}", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.GetExport(r.Context(), c, r.PathValue("volume"), r.PathValue("export"))
		return res(ok, v, err)
	})
	h.handle("DELETE /v1/volumes/{volume}/exports/{export}", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.DeleteExport(r.Context(), c, r.PathValue("volume"), r.PathValue("export"))
		return res(accepted, v, err)
	})
	h.handle("GET /v1/volumes/{volume}/exports/{export}/credentials", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.ExportCredentials(r.Context(), c, r.PathValue("volume"), r.PathValue("export"))
		return res(ok, v, err)
	})

	// backups
	h.handle("POST /v1/volumes/{volume}/backups", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.BackupCreate
		if err := decodeOptional(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.CreateBackup(r.Context(), c, r.PathValue("volume"), req)
		return res(accepted, v, err)
	})
	h.handle("POST /v1/volumes/{volume}/backups/forget", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.BackupForget
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.ForgetBackups(r.Context(), c, r.PathValue("volume"), req)
		return res(accepted, v, err)
	})
	h.handle("GET /v1/volumes/{volume}/backups", func(r *http.Request, c service.Caller) (result, error) {
		pg, err := page(r)
		if err != nil {
			return result{}, err
		}
		v, err := s.ListBackups(r.Context(), c, pg, r.PathValue("volume"), r.URL.Query().Get("repository"))
		return res(ok, v, err)
	})
	h.handle("GET /v1/backups", func(r *http.Request, c service.Caller) (result, error) {
		pg, err := page(r)
		if err != nil {
			return result{}, err
		}
		q := r.URL.Query()
		v, err := s.ListBackups(r.Context(), c, pg, q.Get("volume"), q.Get("repository"))
		return res(ok, v, err)
	})
	h.handle("POST /v1/backups/verify", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.BackupVerify
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.VerifyBackups(r.Context(), c, req)
		return res(accepted, v, err)
	})
	h.handle("GET /v1/backups/{backup}", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.GetBackup(r.Context(), c, r.PathValue("backup"))
		return res(ok, v, err)
	})
	h.handle("POST /v1/backups/{backup}/files", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.BackupFiles
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.CopyBackupFiles(r.Context(), c, r.PathValue("backup"), req)
		return res(accepted, v, err)
	})
	h.handle("POST /v1/backups/{backup}/restore", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.BackupRestore
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.RestoreBackup(r.Context(), c, r.PathValue("backup"), req)
		return res(accepted, v, err)
	})
	h.handle("GET /v1/backups/{backup}/exports", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.ListBackupExports(r.Context(), c, r.PathValue("backup"))
		return res(ok, v, err)
	})
	h.handle("POST /v1/backups/{backup}/exports", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.BackupExportCreate
		if err := decodeOptional(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.CreateBackupExport(r.Context(), c, r.PathValue("backup"), req)
		return res(accepted, v, err)
	})
	h.handle("GET /v1/backups/{backup}/exports/{export}", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.GetBackupExport(r.Context(), c, r.PathValue("backup"), r.PathValue("export"))
		return res(ok, v, err)
	})
	h.handle("DELETE /v1/backups/{backup}/exports/{export}", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.DeleteBackupExport(r.Context(), c, r.PathValue("backup"), r.PathValue("export"))
		return res(accepted, v, err)
	})
	h.handle("GET /v1/backups/{backup}/exports/{export}/credentials", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.BackupExportCredentials(r.Context(), c, r.PathValue("backup"), r.PathValue("export"))
		return res(ok, v, err)
	})

	// schedules
	h.handle("GET /v1/schedules", func(r *http.Request, c service.Caller) (result, error) {
		pg, err := page(r)
		if err != nil {
			return result{}, err
		}
		v, err := s.ListSchedules(r.Context(), c, pg)
		return res(ok, v, err)
	})
	h.handle("POST /v1/schedules", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.ScheduleCreate
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.CreateSchedule(r.Context(), c, req)
		return res(created, v, err)
	})
	h.handle("GET /v1/schedules/{schedule}", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.GetSchedule(r.Context(), c, r.PathValue("schedule"))
		return res(ok, v, err)
	})
	h.handle("PATCH /v1/schedules/{schedule}", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.ScheduleUpdate
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.UpdateSchedule(r.Context(), c, r.PathValue("schedule"), req)
		return res(ok, v, err)
	})
	h.handle("DELETE /v1/schedules/{schedule}", func(r *http.Request, c service.Caller) (result, error) {
		return none(s.DeleteSchedule(r.Context(), c, r.PathValue("schedule")))
	})
	h.handle("POST /v1/schedules/{schedule}/run", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.RunScheduleNow(r.Context(), c, r.PathValue("schedule"))
		return res(accepted, v, err)
	})
	h.handle("GET /v1/schedules/{schedule}/next", func(r *http.Request, c service.Caller) (result, error) {
		count := 5
		if q := r.URL.Query().Get("count"); q != "" {
			n, err := strconv.Atoi(q)
			if err != nil {
				return result{}, core.Invalid("count %q is not a number", q)
			}
			count = n
		}
		v, err := s.NextRuns(r.Context(), c, r.PathValue("schedule"), count)
		return res(ok, v, err)
	})
	h.handle("GET /v1/schedules/{schedule}/history", func(r *http.Request, c service.Caller) (result, error) {
		pg, err := page(r)
		if err != nil {
			return result{}, err
		}
		v, err := s.ScheduleHistory(r.Context(), c, r.PathValue("schedule"), pg)
		return res(ok, v, err)
	})
	h.handle("POST /v1/schedules/{schedule}/retention-preview", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.ScheduleUpdate
		if err := decodeOptional(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.RetentionPreview(r.Context(), c, r.PathValue("schedule"), &req)
		return res(ok, v, err)
	})
	h.handle("PATCH /v1/volumes/{volume}/labels", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.VolumeLabels
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.LabelVolume(r.Context(), c, r.PathValue("volume"), req)
		return res(ok, v, err)
	})

	// repositories
	h.handle("GET /v1/repositories", func(r *http.Request, c service.Caller) (result, error) {
		pg, err := page(r)
		if err != nil {
			return result{}, err
		}
		v, err := s.ListRepositories(r.Context(), c, pg)
		return res(ok, v, err)
	})
	h.handle("POST /v1/repositories", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.RepositoryCreate
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.CreateRepository(r.Context(), c, req)
		return res(accepted, v, err)
	})
	h.handle("GET /v1/repositories/{repository}", func(r *http.Request, c service.Caller) (result, error) {
		reveal, err := boolQuery(r, "reveal_password")
		if err != nil {
			return result{}, err
		}
		v, err := s.GetRepository(r.Context(), c, r.PathValue("repository"), reveal)
		return res(ok, v, err)
	})
	h.handle("POST /v1/repositories/{repository}/verify", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.RepositoryVerify
		if err := decodeOptional(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.VerifyRepository(r.Context(), c, r.PathValue("repository"), req)
		return res(accepted, v, err)
	})
	h.handle("POST /v1/repositories/{repository}/prune", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.PruneRepository(r.Context(), c, r.PathValue("repository"))
		return res(accepted, v, err)
	})

	// tasks
	h.handle("GET /v1/tasks", func(r *http.Request, c service.Caller) (result, error) {
		pg, err := page(r)
		if err != nil {
			return result{}, err
		}
		q := r.URL.Query()
		v, err := s.ListTasks(r.Context(), c, pg, q.Get("state"), q.Get("volume"))
		return res(ok, v, err)
	})
	h.handle("GET /v1/tasks/{task}", func(r *http.Request, c service.Caller) (result, error) {
		wait, err := waitQuery(r)
		if err != nil {
			return result{}, err
		}
		v, err := s.GetTask(r.Context(), c, r.PathValue("task"), wait)
		return res(ok, v, err)
	})
	h.handle("POST /v1/tasks/{task}/cancel", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.CancelTask(r.Context(), c, r.PathValue("task"))
		return res(ok, v, err)
	})

	// nodes
	h.handle("GET /v1/nodes", func(r *http.Request, c service.Caller) (result, error) {
		pg, err := page(r)
		if err != nil {
			return result{}, err
		}
		v, err := s.ListNodes(r.Context(), c, pg)
		return res(ok, v, err)
	})
	h.handle("POST /v1/nodes", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.NodeCreate
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.CreateNode(r.Context(), c, req)
		return res(created, v, err)
	})
	h.handle("GET /v1/nodes/{node}", func(r *http.Request, c service.Caller) (result, error) {
		v, err := s.GetNode(r.Context(), c, r.PathValue("node"))
		return res(ok, v, err)
	})
	h.handle("DELETE /v1/nodes/{node}", func(r *http.Request, c service.Caller) (result, error) {
		return none(s.DeleteNode(r.Context(), c, r.PathValue("node")))
	})

	// the node API
	h.handle("POST /v1/node/register", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.NodeRegister
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.RegisterNode(r.Context(), c, req)
		return res(ok, v, err)
	})
	h.handle("POST /v1/node/heartbeat", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.NodeHeartbeat
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		return none(s.Heartbeat(r.Context(), c, req))
	})
	h.handle("POST /v1/node/claim", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.NodeClaim
		if err := decodeOptional(r, &req); err != nil {
			return result{}, err
		}
		wait := time.Duration(req.WaitMS) * time.Millisecond
		if wait > maxWait {
			wait = maxWait
		}
		t, err := s.Claim(r.Context(), c, wait)
		if err != nil {
			return result{}, err
		}
		if t == nil {
			return noContent()
		}
		return ok(t)
	})
	h.handle("POST /v1/node/tasks/{task}/progress", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.NodeProgress
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.Progress(r.Context(), c, r.PathValue("task"), req)
		return res(ok, v, err)
	})
	h.handle("POST /v1/node/tasks/{task}/complete", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.NodeComplete
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		return none(s.Complete(r.Context(), c, r.PathValue("task"), req))
	})
	h.handle("POST /v1/node/inventory", func(r *http.Request, c service.Caller) (result, error) {
		var req apitypes.NodeInventory
		if err := decode(r, &req); err != nil {
			return result{}, err
		}
		v, err := s.Inventory(r.Context(), c, req)
		return res(ok, v, err)
	})
}

func res(kind func(any) (result, error), v any, err error) (result, error) {
	if err != nil {
		return result{}, err
	}
	return kind(v)
}

func none(err error) (result, error) {
	if err != nil {
		return result{}, err
	}
	return noContent()
}
