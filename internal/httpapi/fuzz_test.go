package httpapi

import (
	"context"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cairn-backup/cairn/internal/meta/sqlite"
	"github.com/cairn-backup/cairn/internal/service"
)

// FuzzAPIInput sends arbitrary bodies and path parameters to the write
// endpoints of a real handler over a real metadata store. Whatever arrives, the
// answer is a 2xx or a 4xx with an error body, never a 500 or a panic.
func FuzzAPIInput(f *testing.F) {
	ctx := context.Background()
	db, err := sqlite.Open(ctx, filepath.Join(f.TempDir(), "fuzz.db"))
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { db.Close() })
	svc := service.New(db, service.Config{})
	secret, err := svc.Bootstrap(ctx)
	if err != nil {
		f.Fatal(err)
	}
	if _, _, err := svc.EnsureLocalNode(ctx, "local"); err != nil {
		f.Fatal(err)
	}
	h := New(svc, nil, nil)
	paths := []string{"/v1/volumes", "/v1/volumes/import", "/v1/volumes/v/grow", "/v1/volumes/v/snapshots",
		"/v1/volumes/v/snapshots/s/apply", "/v1/volumes/v/snapshots/s/to-volume", "/v1/volumes/v/exports",
		"/v1/projects", "/v1/tokens", "/v1/nodes", "/v1/volumes/v/revert"}
	// A volume and a snapshot row for the paths above to find.
	call := func(method, path, body string) *httptest.ResponseRecorder {
		req := httptest.NewRequest(method, path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+secret)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		return w
	}
	call("POST", "/v1/volumes", `{"name":"v","size":1048576}`)
	for i, seed := range []string{`{"name":"x","size":1048576}`, `{"name":"s"}`, `{}`, `{"size":-1}`, `{"name":"a","path":"/x"}`,
		`{"snapshot":"s","writable":true}`, `{"name":"p","role":"viewer"}`, `[]`, `null`, `{"name":` + "\x00" + `}`} {
		f.Add(uint8(i), seed, "")
	}
	f.Fuzz(func(t *testing.T, which uint8, body, query string) {
		path := paths[int(which)%len(paths)]
		if query != "" {
			path += "?" + strings.ReplaceAll(strings.ReplaceAll(query, "#", ""), " ", "")
		}
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("POST %s %q panicked: %v", path, body, r)
			}
		}()
		req, err := http.NewRequest("POST", "http://x"+path, strings.NewReader(body))
		if err != nil {
			return // not a request a client could send
		}
		req.Header.Set("Authorization", "Bearer "+secret)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("POST %s %q: status %d: %s", path, body, w.Code, w.Body.String())
		}
		if w.Code >= 400 && !strings.Contains(w.Body.String(), `"code"`) {
			t.Fatalf("POST %s %q: status %d without an error body", path, body, w.Code)
		}
	})
}
