// Package httpapi serves cairn's REST API under /v1: it authenticates the
// bearer token, scopes every request to one project, decodes the JSON bodies of
// package apitypes, calls the service layer and turns its errors into HTTP
// statuses in one place. Actions that touch disks answer 202 with a task. The
// OpenAPI document (openapi.yaml, served as /v1/openapi.json) describes exactly
// these endpoints and bodies; package apitest checks handlers against it.
package httpapi
