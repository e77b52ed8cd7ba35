// Package client is the Go client of cairn's REST API (/v1).
//
// A Client is safe for concurrent use. It does not retry: a caller that wants
// retries wraps the http.Client's transport. Every answer that is not 2xx
// becomes a *core.Error whose Kind follows the HTTP status (400 Invalid, 401
// Unauthorized, 403 Forbidden, 404 NotFound, 409 Conflict, 422 Corrupt, anything
// else Internal) and whose Code and Message come from the apitypes.Error body.
// Transport failures are returned wrapped, with the method and path, and have
// KindInternal.
//
// Actions that touch disks answer with a Task (202); WaitTask follows one until
// it is final. Lists come as one page (List...) or all pages (All...).
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
)

// Client talks to one cairn server with one token.
type Client struct {
	baseURL string
	token   string
	project string
	http    *http.Client
}

// Option configures a Client.
type Option func(*Client)

// WithProject makes every request act in project (header Cairn-Project). Only
// an admin token may act in another project than its own.
func WithProject(project string) Option {
	return func(c *Client) { c.project = project }
}

// WithHTTPClient sets the http.Client used for requests (default: a client
// without a timeout; requests are bounded by their context).
func WithHTTPClient(hc *http.Client) Option {
	return func(c *Client) { c.http = hc }
}

// New returns a client of the server at baseURL (for example
// "http://127.0.0.1:7420") authenticating with token.
func New(baseURL, token string, opts ...Option) *Client {
	c := &Client{
		baseURL: strings.TrimRight(baseURL, "/"),
		token:   token,
		http:    &http.Client{},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

// BaseURL returns the server address the client talks to.
func (c *Client) BaseURL() string { return c.baseURL }

// Project returns the project set with WithProject, or "".
func (c *Client) Project() string { return c.project }

// ListOptions selects one page of a list. Zero values leave the choice to the
// server (its default page size, the first page).
type ListOptions struct {
	Limit  int
	Cursor string
}

func (o ListOptions) query() url.Values {
	q := url.Values{}
	if o.Limit > 0 {
		q.Set("limit", fmt.Sprint(o.Limit))
	}
	if o.Cursor != "" {
		q.Set("cursor", o.Cursor)
	}
	return q
}

// request is one API call.
type request struct {
	method string
	path   string // already escaped
	query  url.Values
	body   any // encoded as JSON when not nil
}

// do sends r and decodes a 2xx answer into out (when out is not nil and the
// answer has a body). It returns the status of a 2xx answer.
func (c *Client) do(ctx context.Context, r request, out any) (int, error) {
	u := c.baseURL + r.path
	if len(r.query) > 0 {
		u += "?" + r.query.Encode()
	}
	var body io.Reader
	if r.body != nil {
		b, err := json.Marshal(r.body)
		if err != nil {
			return 0, fmt.Errorf("%s %s: encode request: %w", r.method, r.path, err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, u, body)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", r.method, r.path, err)
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "cairn-client")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	if c.project != "" {
		req.Header.Set(apitypes.HeaderProject, c.project)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return 0, fmt.Errorf("%s %s: %w", r.method, u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return resp.StatusCode, errorFromResponse(resp)
	}
	if out == nil || resp.StatusCode == http.StatusNoContent {
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return resp.StatusCode, fmt.Errorf("%s %s: decode answer: %w", r.method, r.path, err)
	}
	return resp.StatusCode, nil
}

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// errorFromResponse turns a non-2xx answer into a *core.Error.
func errorFromResponse(resp *http.Response) error {
	kind, code := kindOfStatus(resp.StatusCode)
	msg := http.StatusText(resp.StatusCode)
	if msg == "" {
		msg = fmt.Sprintf("HTTP status %d", resp.StatusCode)
	}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var e apitypes.Error
	if json.Unmarshal(b, &e) == nil {
		if e.Code != "" {
			code = e.Code
		}
		if e.Message != "" {
			msg = e.Message
		}
	}
	return &core.Error{Kind: kind, Code: code, Message: msg}
}

// kindOfStatus maps an HTTP status to an error kind and the code used when the
// answer carries none.
func kindOfStatus(status int) (core.Kind, string) {
	switch status {
	case http.StatusBadRequest:
		return core.KindInvalid, "invalid"
	case http.StatusUnauthorized:
		return core.KindUnauthorized, "unauthorized"
	case http.StatusForbidden:
		return core.KindForbidden, "forbidden"
	case http.StatusNotFound:
		return core.KindNotFound, "not_found"
	case http.StatusConflict:
		return core.KindConflict, "conflict"
	case http.StatusUnprocessableEntity:
		return core.KindCorrupt, "corrupt"
	default:
		return core.KindInternal, "internal"
	}
}

// get, post, patch and del are the shapes most endpoints take.

func (c *Client) get(ctx context.Context, path string, q url.Values, out any) error {
	_, err := c.do(ctx, request{method: http.MethodGet, path: path, query: q}, out)
	return err
}

func (c *Client) post(ctx context.Context, path string, body, out any) error {
	_, err := c.do(ctx, request{method: http.MethodPost, path: path, body: body}, out)
	return err
}

func (c *Client) patch(ctx context.Context, path string, body, out any) error {
	_, err := c.do(ctx, request{method: http.MethodPatch, path: path, body: body}, out)
	return err
}

func (c *Client) del(ctx context.Context, path string, q url.Values, out any) error {
	_, err := c.do(ctx, request{method: http.MethodDelete, path: path, query: q}, out)
	return err
}

// p builds a path from literal segments and parameters; parameters (the odd
// arguments) are escaped.
func p(parts ...string) string {
	var b strings.Builder
	for i, s := range parts {
		if i%2 == 1 {
			s = url.PathEscape(s)
		}
		b.WriteString(s)
	}
	return b.String()
}

// MaxPageSize is the largest page the server serves; All... helpers use it
// so that a long list costs few round trips.
const MaxPageSize = 1000

// errCursorLoop guards All... against a server that hands back the same cursor.
var errCursorLoop = errors.New("the server returned the same list cursor twice")

// all follows cursors from the first page to the last and returns every item,
// never nil.
func all[T any](ctx context.Context, page func(context.Context, ListOptions) (apitypes.List[T], error)) ([]T, error) {
	items := []T{}
	seen := map[string]bool{}
	opts := ListOptions{Limit: MaxPageSize}
	for {
		l, err := page(ctx, opts)
		if err != nil {
			return nil, err
		}
		items = append(items, l.Items...)
		if l.NextCursor == "" {
			return items, nil
		}
		if seen[l.NextCursor] {
			return nil, fmt.Errorf("list: %w", errCursorLoop)
		}
		seen[l.NextCursor] = true
		opts.Cursor = l.NextCursor
	}
}

// list fetches one page of a list endpoint.
func list[T any](ctx context.Context, c *Client, path string, opts ListOptions, extra url.Values) (apitypes.List[T], error) {
	q := opts.query()
	for k, vs := range extra {
		for _, v := range vs {
			if v != "" {
				q.Add(k, v)
			}
		}
	}
	var l apitypes.List[T]
	if err := c.get(ctx, path, q, &l); err != nil {
		return apitypes.List[T]{}, err
	}
	if l.Items == nil {
		l.Items = []T{}
	}
	return l, nil
}
