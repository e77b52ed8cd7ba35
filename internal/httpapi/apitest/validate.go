// Package apitest checks HTTP traffic against cairn's OpenAPI document, so that
// the document, the handlers and the Go client cannot drift apart unnoticed.
//
// Wrap the transport of any client that talks to a test server:
//
//	v := apitest.NewValidator(t)
//	hc := &http.Client{Transport: v.Transport(nil)}
//
// Every exchange under /v1 is then checked, and each mismatch is reported with
// t.Errorf. Responses are always checked: the status must be declared for the
// operation, the content type must be one the document lists, and the body must
// match the schema (unknown fields included, since response objects forbid
// additional properties). Requests are checked too (path, parameters, body),
// but a request the document rejects is reported only when the server accepted
// it with a 2xx status: tests that send bad input on purpose and expect 400 stay
// quiet. A request body without a Content-Type is checked as JSON, since the
// server reads it so. Authentication is left to the server: any credentials
// pass here.
package apitest

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/getkin/kin-openapi/openapi3"
	"github.com/getkin/kin-openapi/openapi3filter"
	"github.com/getkin/kin-openapi/routers"
	"github.com/getkin/kin-openapi/routers/legacy"

	"github.com/cairn-backup/cairn/internal/httpapi"
)

// uuidPattern is the form of every id cairn makes (lower-case canonical UUID).
const uuidPattern = `^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$`

// The document and its router are built once per test binary and only read
// afterwards, so validators in parallel tests share them.
var shared struct {
	once   sync.Once
	doc    *openapi3.T
	router routers.Router
	err    error
}

func load() (*openapi3.T, routers.Router, error) {
	shared.once.Do(func() {
		// kin-openapi checks only the formats it knows; teach it "uuid" so
		// that an id field holding anything else is caught. The registry is
		// global, so this is done once, before any validation runs.
		openapi3.DefineStringFormatValidator("uuid", openapi3.NewRegexpFormatValidator(uuidPattern))

		data, err := httpapi.OpenAPIDocument()
		if err != nil {
			shared.err = err
			return
		}
		loader := openapi3.NewLoader()
		doc, err := loader.LoadFromData(data)
		if err != nil {
			shared.err = fmt.Errorf("load the OpenAPI document: %w", err)
			return
		}
		router, err := legacy.NewRouter(doc)
		if err != nil {
			shared.err = fmt.Errorf("route the OpenAPI document: %w", err)
			return
		}
		shared.doc, shared.router = doc, router
	})
	return shared.doc, shared.router, shared.err
}

// Validator reports, through its testing.TB, every exchange that disagrees
// with the OpenAPI document. It is safe for concurrent use.
type Validator struct {
	t      testing.TB
	router routers.Router
}

// NewValidator loads the API document; a document that does not load or
// validate fails the test at once.
func NewValidator(t testing.TB) *Validator {
	t.Helper()
	_, router, err := load()
	if err != nil {
		t.Fatalf("apitest: %v", err)
	}
	return &Validator{t: t, router: router}
}

// Transport returns a RoundTripper that sends each request through base
// (http.DefaultTransport when nil) and checks the request and its response
// against the document. Paths outside /v1 (such as /metrics) pass unchecked.
// Bodies are read in full and handed on unchanged.
func (v *Validator) Transport(base http.RoundTripper) http.RoundTripper {
	if base == nil {
		base = http.DefaultTransport
	}
	return &transport{v: v, base: base}
}

type transport struct {
	v    *Validator
	base http.RoundTripper
}

func (tr *transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if req.URL.Path != "/v1" && !strings.HasPrefix(req.URL.Path, "/v1/") {
		return tr.base.RoundTrip(req)
	}

	var reqBody []byte
	if req.Body != nil && req.Body != http.NoBody {
		b, err := io.ReadAll(req.Body)
		req.Body.Close()
		if err != nil {
			return nil, fmt.Errorf("apitest: read the request body: %w", err)
		}
		reqBody = b
	}
	sent := withBody(req, reqBody)

	resp, err := tr.base.RoundTrip(sent)
	if err != nil {
		return nil, err
	}
	respBody, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(respBody))
	if err != nil {
		return nil, fmt.Errorf("apitest: read the response body: %w", err)
	}

	checked := withBody(req, reqBody)
	if len(reqBody) > 0 && checked.Header.Get("Content-Type") == "" {
		// The server reads every body as JSON; only a wrong type is a mismatch.
		checked.Header.Set("Content-Type", "application/json")
	}
	tr.v.check(checked, resp, respBody)
	return resp, nil
}

// withBody returns a copy of req that reads body (none when nil).
func withBody(req *http.Request, body []byte) *http.Request {
	r := req.Clone(req.Context())
	if body == nil {
		r.Body = http.NoBody
		r.GetBody = func() (io.ReadCloser, error) { return http.NoBody, nil }
		return r
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(body)), nil }
	r.ContentLength = int64(len(body))
	return r
}

// check validates one exchange and reports what disagrees with the document.
func (v *Validator) check(req *http.Request, resp *http.Response, respBody []byte) {
	ctx := context.Background()
	accepted := resp.StatusCode >= 200 && resp.StatusCode < 300
	report := func(what string, err error) {
		v.t.Errorf("openapi: %s %s -> %d: %s: %v", req.Method, req.URL.RequestURI(), resp.StatusCode, what, err)
	}

	route, pathParams, err := v.router.FindRoute(req)
	if err != nil {
		// A request the document does not know must not succeed; when
		// it fails, there is no operation to check the error against.
		if accepted {
			report("no such operation in the document", err)
		}
		return
	}

	opts := &openapi3filter.Options{
		MultiError:            true,
		IncludeResponseStatus: true,
		SkipSettingDefaults:   true,
		AuthenticationFunc:    openapi3filter.NoopAuthenticationFunc,
	}
	opts.WithCustomSchemaErrorFunc(schemaErrorMessage)

	in := &openapi3filter.RequestValidationInput{
		Request:    req,
		PathParams: pathParams,
		Route:      route,
		Options:    opts,
	}
	if err := openapi3filter.ValidateRequest(ctx, in); err != nil && accepted {
		report("request accepted but the document rejects it", err)
	}

	out := &openapi3filter.ResponseValidationInput{
		RequestValidationInput: in,
		Status:                 resp.StatusCode,
		Header:                 resp.Header,
		Options:                opts,
	}
	out.SetBodyBytes(respBody)
	if err := openapi3filter.ValidateResponse(ctx, out); err != nil {
		report("response", err)
		return
	}

	// kin-openapi checks no body when the document declares none, as for
	// 204: such a response must then have an empty body.
	if ref := route.Operation.Responses.Status(resp.StatusCode); ref != nil && ref.Value != nil &&
		len(ref.Value.Content) == 0 && len(bytes.TrimSpace(respBody)) > 0 {
		report("response", fmt.Errorf("the document declares no body for status %d, got %d bytes", resp.StatusCode, len(respBody)))
	}
}

// schemaErrorMessage shortens kin-openapi's schema errors, which otherwise
// print the whole schema and value, to the JSON path and the reason.
func schemaErrorMessage(err *openapi3.SchemaError) string {
	if err.Reason == "" {
		return "" // kin-openapi's own message
	}
	return fmt.Sprintf("at %q: %s", "/"+strings.Join(err.JSONPointer(), "/"), err.Reason)
}
