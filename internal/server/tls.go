package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// Certificate is the server's TLS certificate. It can be reloaded from its
// files (on SIGHUP) while connections are served: each handshake takes the
// current one.
type Certificate struct {
	certFile, keyFile string
	cur               atomic.Pointer[tls.Certificate]
}

// LoadCertificate reads a PEM certificate chain and key.
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	c := &Certificate{certFile: certFile, keyFile: keyFile}
	if err := c.Reload(); err != nil {
		return nil, err
	}
	return c, nil
}

// Reload reads the files again. On error the current certificate stays.
func (c *Certificate) Reload() error {
	if c.certFile == "" {
		return nil // generated in memory
	}
	cert, err := tls.LoadX509KeyPair(c.certFile, c.keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	c.cur.Store(&cert)
	return nil
}

// Leaf returns the current leaf certificate.
func (c *Certificate) Leaf() *x509.Certificate { return c.cur.Load().Leaf }

// SelfSigned makes a certificate for localhost in memory, for dev mode.
func SelfSigned() (*Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: "conda-upload-server dev"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	c := &Certificate{}
	c.cur.Store(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf})
	return c, nil
}

// TLSConfig returns the server TLS configuration: TLS 1.2 or later, HTTP/2
// allowed. TLS 1.3 uses Go's suites; TLS 1.2 is limited to forward-secret
// AEAD suites (Go's defaults without the CBC ones, which scanners rate
// weak), which every client of the last decade supports.
func (c *Certificate) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		CipherSuites: []uint16{
			tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
			tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
		},
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return c.cur.Load(), nil
		},
	}
}

// uploadWindow is the HTTP/2 flow-control window for request bodies, per
// stream and per connection: the largest that HTTP2Config documents.
const uploadWindow = 4<<20 - 1

// HTTP2Config is the HTTP/2 configuration for the upload listener.
//
// An HTTP/2 upload can have at most one flow-control window in flight, so
// it runs at most at window/RTT. Go's default window of 1 MiB holds an
// upload from a CI runner 20 ms away to about 44 MB/s (measured through a
// delaying proxy, BENCHMARKS.md), against about 215 MB/s over HTTP/1.1,
// where the kernel sizes the TCP window. curl and Go clients pick HTTP/2
// when it is offered. A 4 MiB window triples that rate; the price is
// that a connection may hold up to 4 MiB of body in memory when the
// network is faster than the server can hash and store, much as the
// kernel does for HTTP/1.1 in its socket buffers.
func HTTP2Config() *http.HTTP2Config {
	return &http.HTTP2Config{
		MaxReceiveBufferPerConnection: uploadWindow,
		MaxReceiveBufferPerStream:     uploadWindow,
	}
}
