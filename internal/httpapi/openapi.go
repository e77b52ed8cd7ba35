package httpapi

import (
	"bytes"
	"context"
	_ "embed"
	"encoding/json"
	"fmt"
	"sync"

	"github.com/getkin/kin-openapi/openapi3"
)

// openAPIYAML is the API reference, written by hand. It is the contract that
// handlers and the Go client follow; apitest checks it against real traffic.
//
//go:embed openapi.yaml
var openAPIYAML []byte

var openAPI struct {
	once sync.Once
	json []byte
	err  error
}

// OpenAPIDocument returns the OpenAPI 3.0 document of the API as JSON, the
// body of GET /v1/openapi.json. The embedded YAML is loaded and validated once;
// an error means the document itself is broken (a bug caught by the tests).
// Each call returns a fresh copy that the caller may keep or change.
func OpenAPIDocument() ([]byte, error) {
	openAPI.once.Do(func() {
		openAPI.json, openAPI.err = buildOpenAPIDocument(context.Background())
	})
	if openAPI.err != nil {
		return nil, openAPI.err
	}
	return bytes.Clone(openAPI.json), nil
}

func buildOpenAPIDocument(ctx context.Context) ([]byte, error) {
	loader := openapi3.NewLoader()
	loader.Context = ctx
	doc, err := loader.LoadFromData(openAPIYAML)
	if err != nil {
		return nil, fmt.Errorf("load openapi.yaml: %w", err)
	}
	if err := doc.Validate(ctx); err != nil {
		return nil, fmt.Errorf("validate openapi.yaml: %w", err)
	}
	out, err := json.Marshal(doc)
	if err != nil {
		return nil, fmt.Errorf("encode the OpenAPI document as JSON: %w", err)
	}
	return out, nil
}
