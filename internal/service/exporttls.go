package service

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net"
	"slices"
	"time"

	"github.com/cairn-backup/cairn/internal/apitypes"
	"github.com/cairn-backup/cairn/internal/core"
	"github.com/cairn-backup/cairn/internal/meta"
)

// TLS for block exports (DESIGN 2b, "Block exports").
//
// An export requires TLS when the server is told so (Config.ExportTLS) or when
// it listens beyond loopback: the server's export address or the address its
// node registered is not a loopback address. The choice is made when the
// export is created and kept in its row; the export comes back with it.
//
// The first time a node is handed a TLS export (at claim time), the service
// issues the export's server certificate from the CA, for the addresses clients
// reach it at, and keeps certificate and key in the export's row, so that the
// export comes back after a restart with the same certificate. The node
// receives the CA certificate, the server pair and the one client identity the
// export admits: that of the volume's project. Clients of that project fetch a
// client certificate carrying that identity from the credentials endpoint;
// another project's certificate, though signed by the same CA, is refused.

// CertificateAuthority issues the certificates of TLS exports. pki.CA
// implements it. Its methods may be called concurrently.
type CertificateAuthority interface {
	// CertPEM is the CA certificate clients and servers trust.
	CertPEM() []byte
	// IssueServer issues a server certificate naming hosts (IP addresses and
	// DNS names) and a new private key, both PEM.
	IssueServer(hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error)
	// IssueClient issues a client certificate whose distinguished name is
	// "CN=" + commonName, and a new private key, both PEM.
	IssueClient(commonName string, validity time.Duration) (certPEM, keyPEM []byte, err error)
}

// Certificate lifetimes. An export's server certificate lives long (an export
// may serve for years; its key never leaves the metadata and the node) and is
// renewed when its export comes back with less than exportCertRenew left. A
// client certificate is handed out on every request and lives a year.
const (
	exportCertValidity = 10 * 365 * 24 * time.Hour
	exportCertRenew    = 30 * 24 * time.Hour
	clientCertValidity = 365 * 24 * time.Hour
)

// ClientIdentity is the distinguished name of a project's client
// certificates, as QEMU's authz-simple matches it. It names the project by id,
// not by name: a project name can be reused after its project was deleted,
// and the new project must not admit the old one's certificates.
func ClientIdentity(projectID string) string { return "CN=" + clientCommonName(projectID) }

func clientCommonName(projectID string) string { return "cairn-project-" + projectID }

// isLoopbackHost reports whether host (an address or a name, no port) is the
// local host only.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// exportNeedsTLS decides whether a new export on node n requires TLS.
func (s *Service) exportNeedsTLS(n meta.Node) bool {
	return s.cfg.ExportTLS || !isLoopbackHost(s.cfg.ExportAddress) || (n.Address != "" && !isLoopbackHost(n.Address))
}

// exportHosts lists the addresses an export's server certificate names: the
// export's address and the address its node registered.
func exportHosts(address string, n meta.Node) []string {
	hosts := []string{address}
	if n.Address != "" && !slices.Contains(hosts, n.Address) {
		hosts = append(hosts, n.Address)
	}
	return hosts
}

// ensureExportCert gives a TLS export a server certificate when it has none,
// or when the one it has expires within exportCertRenew, and stores it. It
// reports whether it issued one.
func (s *Service) ensureExportCert(ctx context.Context, tx *meta.Tx, e *meta.Export, v meta.Volume) (bool, error) {
	if !e.TLS {
		return false, nil
	}
	n, err := tx.NodeByID(ctx, v.NodeID)
	if err != nil && !meta.IsNoRows(err) {
		return false, err
	}
	cert, key, issued, err := s.issueServerCert(e.ID, e.TLSCert, e.TLSKey, exportHosts(e.Address, n))
	if err != nil || !issued {
		return false, err
	}
	e.TLSCert, e.TLSKey = cert, key
	return true, tx.UpdateExport(ctx, *e)
}

// certCurrent reports whether a stored server certificate can go on serving:
// the current CA signed it (an operator may have replaced the CA) and it is
// valid for more than exportCertRenew.
func (s *Service) certCurrent(certPEM string) bool {
	cert, err := parseCertificate([]byte(certPEM))
	if err != nil {
		return false
	}
	ca, err := parseCertificate(s.cfg.CA.CertPEM())
	if err != nil {
		return false
	}
	return cert.CheckSignatureFrom(ca) == nil && s.now().Add(exportCertRenew).Before(cert.NotAfter)
}

func parseCertificate(certPEM []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("not a PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// nodeExport is an export as the node must run it.
func (s *Service) nodeExport(e meta.Export, v meta.Volume, tag string) apitypes.NodeExport {
	ne := apitypes.NodeExport{ID: e.ID, VolumeID: e.VolumeID, Tag: tag, Writable: e.Writable, Name: e.Name, Port: e.Port, Address: e.Address}
	if e.TLS {
		ne.TLS = &apitypes.NodeExportTLS{ServerCert: e.TLSCert, ServerKey: e.TLSKey, ClientIdentity: ClientIdentity(v.ProjectID)}
		if s.cfg.CA != nil {
			ne.TLS.CACert = string(s.cfg.CA.CertPEM())
		}
	}
	return ne
}

// ExportCredentials issues a client certificate of the caller's project for a
// TLS export of one of its volumes. Only operators and admins get one.
func (s *Service) ExportCredentials(ctx context.Context, c Caller, vref, id string) (apitypes.ExportCredentials, error) {
	if err := c.requireUser(); err != nil {
		return apitypes.ExportCredentials{}, err
	}
	if err := c.requireWrite(); err != nil {
		return apitypes.ExportCredentials{}, err
	}
	var v meta.Volume
	var e meta.Export
	err := s.db.View(ctx, func(tx *meta.Tx) error {
		var err error
		if v, err = volumeByRef(ctx, tx, c, vref); err != nil {
			return err
		}
		e, err = tx.ExportByID(ctx, v.ID, id)
		if meta.IsNoRows(err) {
			return core.NotFound("export %q of volume %q not found", id, v.Name)
		}
		return err
	})
	if err != nil {
		return apitypes.ExportCredentials{}, err
	}
	if !e.TLS {
		return apitypes.ExportCredentials{}, core.Conflict("no_tls",
			"export %s of volume %q is served without TLS (on loopback): connect to its URI without credentials", e.ID, v.Name)
	}
	return s.clientCredentials(e.ID, v.ProjectID)
}

// clientCredentials issues a client certificate of a project for the TLS
// export exportID.
func (s *Service) clientCredentials(exportID, projectID string) (apitypes.ExportCredentials, error) {
	if s.cfg.CA == nil {
		return apitypes.ExportCredentials{}, fmt.Errorf("export %s requires TLS but the server has no certificate authority", exportID)
	}
	cert, key, err := s.cfg.CA.IssueClient(clientCommonName(projectID), clientCertValidity)
	if err != nil {
		return apitypes.ExportCredentials{}, fmt.Errorf("issuing a client certificate: %w", err)
	}
	return apitypes.ExportCredentials{CACert: string(s.cfg.CA.CertPEM()), ClientCert: string(cert), ClientKey: string(key),
		Identity: ClientIdentity(projectID)}, nil
}

// issueServerCert returns a PEM server certificate and key for an export
// at hosts, unless the current one (certPEM) can go on serving.
func (s *Service) issueServerCert(exportID, certPEM, keyPEM string, hosts []string) (string, string, bool, error) {
	if s.cfg.CA == nil {
		return "", "", false, fmt.Errorf("export %s requires TLS but the server has no certificate authority", exportID)
	}
	if certPEM != "" && keyPEM != "" && s.certCurrent(certPEM) {
		return certPEM, keyPEM, false, nil
	}
	cert, key, err := s.cfg.CA.IssueServer(hosts, exportCertValidity)
	if err != nil {
		return "", "", false, fmt.Errorf("issuing the server certificate of export %s: %w", exportID, err)
	}
	return string(cert), string(key), true, nil
}
