package testenv

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// PKI is a private certificate authority made for one test, with a server
// certificate for 127.0.0.1 and localhost and a client certificate, all as
// PEM files in Dir. Made with crypto/x509 alone (no openssl).
type PKI struct {
	Dir string

	CACert     string // the CA certificate
	ServerCert string // server certificate (also usable as a client: cluster bus)
	ServerKey  string
	ClientCert string // client certificate, CN ClientName
	ClientKey  string
	// ClientPEM holds the client certificate and its key in one file, as
	// MongoDB's tlsCertificateKeyFile wants.
	ClientPEM string

	Pool   *x509.CertPool
	client tls.Certificate
}

// ClientName is the common name of the PKI's client certificate.
const ClientName = "persister-test-client"

// NewPKI makes a CA and its certificates in a temp dir. Each call makes a
// different CA: a second PKI's CA does not verify the first's servers.
func NewPKI(t testing.TB) *PKI {
	t.Helper()
	p, err := newPKI(t.TempDir())
	if err != nil {
		t.Fatalf("testenv: NewPKI: %v", err)
	}
	return p
}

func newPKI(dir string) (*PKI, error) {
	p := &PKI{Dir: dir}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "persister test CA " + now.Format(time.RFC3339Nano)},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, err
	}
	p.CACert = filepath.Join(dir, "ca.crt")
	if err := writePEM(p.CACert, "CERTIFICATE", caDER); err != nil {
		return nil, err
	}
	p.Pool = x509.NewCertPool()
	p.Pool.AddCert(ca)

	issue := func(serial int64, cn string, server bool, certPath, keyPath string) ([]byte, []byte, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial),
			Subject:      pkix.Name{CommonName: cn},
			NotBefore:    now.Add(-time.Hour),
			NotAfter:     now.Add(24 * time.Hour),
			KeyUsage:     x509.KeyUsageDigitalSignature,
			ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}
		if server {
			tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
			tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1"), net.IPv6loopback}
			tmpl.DNSNames = []string{"localhost"}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return nil, nil, err
		}
		if err := writePEM(certPath, "CERTIFICATE", der); err != nil {
			return nil, nil, err
		}
		if err := writePEM(keyPath, "PRIVATE KEY", keyDER); err != nil {
			return nil, nil, err
		}
		return der, keyDER, nil
	}
	p.ServerCert, p.ServerKey = filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	if _, _, err := issue(2, "localhost", true, p.ServerCert, p.ServerKey); err != nil {
		return nil, err
	}
	p.ClientCert, p.ClientKey = filepath.Join(dir, "client.crt"), filepath.Join(dir, "client.key")
	der, keyDER, err := issue(3, ClientName, false, p.ClientCert, p.ClientKey)
	if err != nil {
		return nil, err
	}
	p.ClientPEM = filepath.Join(dir, "client.pem")
	both := append(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})...)
	if err := os.WriteFile(p.ClientPEM, both, 0o600); err != nil {
		return nil, err
	}
	p.client, err = tls.LoadX509KeyPair(p.ClientCert, p.ClientKey)
	if err != nil {
		return nil, err
	}
	return p, nil
}

func writePEM(path, typ string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600)
}

// ClientTLS returns a client TLS config that trusts the CA and presents the
// client certificate.
func (p *PKI) ClientTLS() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: p.Pool, Certificates: []tls.Certificate{p.client}}
}
