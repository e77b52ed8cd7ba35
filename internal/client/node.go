package client

import (
	"context"
	"net/http"

	"github.com/cairn-backup/cairn/internal/apitypes"
)

// The node API, used by `cairn node` with a node token. These methods make
// *Client satisfy the interface the node package declares.

// Register tells the server the node is up and where it is.
func (c *Client) Register(ctx context.Context, in apitypes.NodeRegister) (apitypes.Node, error) {
	var out apitypes.Node
	err := c.post(ctx, "/v1/node/register", in, &out)
	return out, err
}

// Heartbeat reports the node alive, with its free space.
func (c *Client) Heartbeat(ctx context.Context, in apitypes.NodeHeartbeat) error {
	return c.post(ctx, "/v1/node/heartbeat", in, nil)
}

// Claim asks for the next task, letting the server wait up to in.WaitMS. It
// returns nil and no error when no task came in that time (204).
func (c *Client) Claim(ctx context.Context, in apitypes.NodeClaim) (*apitypes.NodeTask, error) {
	var out apitypes.NodeTask
	status, err := c.do(ctx, request{method: http.MethodPost, path: "/v1/node/claim", body: in}, &out)
	if err != nil {
		return nil, err
	}
	if status == http.StatusNoContent {
		return nil, nil
	}
	return &out, nil
}

// Progress reports a running task's progress and learns whether to cancel it.
func (c *Client) Progress(ctx context.Context, taskID string, in apitypes.NodeProgress) (apitypes.NodeCancelCheck, error) {
	var out apitypes.NodeCancelCheck
	err := c.post(ctx, p("/v1/node/tasks/", taskID, "/progress"), in, &out)
	return out, err
}

// Complete ends a task: success when in.Error is empty.
func (c *Client) Complete(ctx context.Context, taskID string, in apitypes.NodeComplete) error {
	return c.post(ctx, p("/v1/node/tasks/", taskID, "/complete"), in, nil)
}

// Inventory reports the volume files the node holds and returns the volumes and
// exports it must hold.
func (c *Client) Inventory(ctx context.Context, in apitypes.NodeInventory) (apitypes.NodeVolumes, error) {
	var out apitypes.NodeVolumes
	err := c.post(ctx, "/v1/node/inventory", in, &out)
	return out, err
}
