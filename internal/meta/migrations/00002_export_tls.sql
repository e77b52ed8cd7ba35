-- +goose Up
-- TLS exports: whether the export requires TLS, and its server certificate and
-- private key (PEM), issued by the server's CA when the export is first
-- started and handed to the node again when the export comes back.
ALTER TABLE exports ADD COLUMN tls INTEGER NOT NULL DEFAULT 0;
ALTER TABLE exports ADD COLUMN tls_cert TEXT NOT NULL DEFAULT '';
ALTER TABLE exports ADD COLUMN tls_key TEXT NOT NULL DEFAULT '';

-- +goose Down
ALTER TABLE exports DROP COLUMN tls_key;
ALTER TABLE exports DROP COLUMN tls_cert;
ALTER TABLE exports DROP COLUMN tls;
