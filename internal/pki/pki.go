// Package pki is the server's own certificate authority: an ECDSA P-256 key
// and a self-signed certificate kept in one directory, which issues the
// short-lived server and client certificates of TLS block exports. It imports
// the standard library only.
//
// Directory layout (created by LoadOrCreateCA, mode 0700):
//
//	DIR/ca.crt   the CA certificate (PEM), handed to every client
//	DIR/ca.key   its private key (PKCS #8 PEM), mode 0600, never leaves DIR
//
// ca.crt is written last, so its presence means the pair is complete: a ca.key
// without ca.crt (a start killed while creating the CA) is replaced by a new
// pair, while a ca.crt without its key is an error, never silently replaced,
// because clients trust that certificate.
//
// The certificates are X.509 v3 as QEMU's tls-creds-x509 (GnuTLS) and Go's
// crypto/tls both accept them: key usage digitalSignature plus keyEncipherment
// on leaf certificates (QEMU refuses a leaf whose critical key usage lacks
// keyEncipherment, even for an ECDSA key), serverAuth or clientAuth extended
// key usage, and a validity that starts an hour in the past so that a peer
// whose clock is slightly behind does not see a certificate from the future.
//
// A CA is safe for concurrent use.
package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/cairn-backup/cairn/internal/atomicfile"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names in the CA directory.
const (
	CertFile = "ca.crt"
	KeyFile  = "ca.key"
)

// CAValidity is how long a new CA certificate is valid.
const CAValidity = 10 * 365 * 24 * time.Hour

// backdate is how far before "now" certificates become valid.
const backdate = time.Hour

// CA is a loaded certificate authority.
type CA struct {
	cert    *x509.Certificate
	certPEM []byte
	key     *ecdsa.PrivateKey
	now     func() time.Time
}

// LoadOrCreateCA loads the CA kept in dir, creating dir and a new CA (valid
// for CAValidity) the first time. It refuses a key file that others may read,
// files that do not parse, a key that does not match the certificate, and a
// CA certificate that has expired, each with an error that says what to do.
func LoadOrCreateCA(dir string) (*CA, error) { return loadOrCreate(dir, time.Now) }

// loadOrCreate is LoadOrCreateCA with a clock, for tests.
func loadOrCreate(dir string, now func() time.Time) (*CA, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	certPEM, err := os.ReadFile(certPath)
	if errors.Is(err, os.ErrNotExist) {
		return createCA(dir, now)
	}
	if err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	st, err := os.Stat(keyPath)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("certificate authority: %s exists but its key %s is missing: restore the key, or move %s away to create a new CA (clients must then fetch new credentials)",
			certPath, keyPath, dir)
	}
	if err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("certificate authority: %s has mode %04o, but a private key must be readable by its owner only: chmod 600 %s",
			keyPath, perm, keyPath)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	ca, err := parseCA(certPEM, keyPEM, now)
	if err != nil {
		return nil, fmt.Errorf("certificate authority in %s: %w", dir, err)
	}
	if now().After(ca.cert.NotAfter) {
		return nil, fmt.Errorf("certificate authority: %s expired on %s: move %s away to create a new CA (clients must then fetch new credentials)",
			certPath, ca.cert.NotAfter.Format(time.DateOnly), dir)
	}
	return ca, nil
}

// parseCA checks that certPEM is a CA certificate and keyPEM its ECDSA key.
func parseCA(certPEM, keyPEM []byte, now func() time.Time) (*CA, error) {
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s is not a PEM certificate", CertFile)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", CertFile, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s is not a CA certificate", CertFile)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", KeyFile, err)
	}
	pub, ok := cert.PublicKey.(*ecdsa.PublicKey)
	if !ok || !pub.Equal(key.Public()) {
		return nil, fmt.Errorf("%s does not hold the key of %s", KeyFile, CertFile)
	}
	return &CA{cert: cert, certPEM: certPEM, key: key, now: now}, nil
}

// parseKey reads an ECDSA private key in PKCS #8 or SEC 1 PEM.
func parseKey(keyPEM []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(keyPEM)
	if block == nil {
		return nil, errors.New("not a PEM private key")
	}
	switch block.Type {
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("a %T, not an ECDSA key", k)
		}
		return ek, nil
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	}
	return nil, fmt.Errorf("PEM block %q is not a private key", block.Type)
}

func createCA(dir string, now func() time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	start := now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{"cairn"}, CommonName: "cairn CA " + serial.Text(16)[:8]},
		NotBefore:             start.Add(-backdate),
		NotAfter:              start.Add(CAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	// The key first: the certificate's arrival completes the pair.
	if err := atomicfile.Write(filepath.Join(dir, KeyFile), keyPEM, 0o600); err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	if err := atomicfile.Write(filepath.Join(dir, CertFile), certPEM, 0o644); err != nil {
		return nil, fmt.Errorf("certificate authority: %w", err)
	}
	return parseCA(certPEM, keyPEM, now)
}

func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding a private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func newSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("certificate serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil // never 0
}

// CertPEM returns the CA certificate, PEM-encoded: what clients trust.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Certificate returns the parsed CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// IssueServer issues a server certificate for hosts (IP addresses become IP
// SANs, anything else DNS SANs; the first host is also the common name),
// valid for validity but never beyond the CA. It returns the certificate
// and a fresh ECDSA P-256 private key, both PEM.
func (ca *CA) IssueServer(hosts []string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if len(hosts) == 0 {
		return nil, nil, errors.New("a server certificate needs at least one host name or address")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: hosts[0]},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if h == "" {
			return nil, nil, errors.New("empty host name in a server certificate request")
		}
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	return ca.issue(tmpl, validity)
}

// IssueClient issues a client certificate whose subject is the common name
// alone, so the peer sees the distinguished name "CN=" + commonName. It is
// valid for validity but never beyond the CA.
func (ca *CA) IssueClient(commonName string, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if commonName == "" {
		return nil, nil, errors.New("a client certificate needs a common name")
	}
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: commonName},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	return ca.issue(tmpl, validity)
}

// issue fills in what every leaf certificate shares and signs tmpl.
func (ca *CA) issue(tmpl *x509.Certificate, validity time.Duration) (certPEM, keyPEM []byte, err error) {
	if validity <= 0 {
		return nil, nil, fmt.Errorf("invalid certificate validity %v", validity)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	if tmpl.SerialNumber, err = newSerial(); err != nil {
		return nil, nil, err
	}
	now := ca.now()
	tmpl.NotBefore = now.Add(-backdate)
	tmpl.NotAfter = now.Add(validity)
	if tmpl.NotAfter.After(ca.cert.NotAfter) {
		tmpl.NotAfter = ca.cert.NotAfter
	}
	if tmpl.NotBefore.Before(ca.cert.NotBefore) {
		tmpl.NotBefore = ca.cert.NotBefore
	}
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
	tmpl.BasicConstraintsValid = true
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), crypto.Signer(ca.key))
	if err != nil {
		return nil, nil, fmt.Errorf("signing a certificate: %w", err)
	}
	if keyPEM, err = encodeKey(key); err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), keyPEM, nil
}
