package server

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"shoal/internal/auth"
	"shoal/internal/wire"
)

var testCreds = map[string][]byte{
	"admin": []byte("0123456789abcdef"),
	"app":   []byte("fedcba9876543210"),
}

// hello sends HELLO and returns the nonce.
func (r *raw) hello() []byte {
	r.t.Helper()
	b := wire.AppendStr8(nil, "test")
	b = wire.AppendU16(b, wire.Version)
	b = wire.AppendU32(b, 0)
	h, body := r.call(wire.OpHello, 0, b)
	if h.Status != wire.StatusOK {
		r.t.Fatalf("HELLO: %v %s", h.Status, body)
	}
	return body[len(body)-wire.NonceLen:]
}

func (r *raw) auth(name string, secret []byte) wire.Status {
	r.t.Helper()
	nonce := r.hello()
	b := wire.AppendStr8(nil, name)
	b = append(b, auth.Proof(secret, nonce, name)...)
	h, _ := r.call(wire.OpAuth, 0, b)
	return h.Status
}

func TestAuthRequiredBeforeData(t *testing.T) {
	ts := startServer(t, Config{Credentials: testCreds})
	r := dialRaw(t, ts.addr)
	if st := r.put("c", "k", "v"); st != wire.StatusAuthRequired {
		t.Fatalf("put before auth: %v", st)
	}
	if h, _ := r.call(wire.OpNoop, 0, nil); h.Status != wire.StatusOK {
		t.Fatalf("noop before auth: %v", h.Status)
	}
	if st := r.auth("app", testCreds["app"]); st != wire.StatusOK {
		t.Fatalf("auth: %v", st)
	}
	if st := r.put("c", "k", "v"); st != wire.StatusOK {
		t.Fatalf("put after auth: %v", st)
	}
	if h, _ := r.call(wire.OpRemoveChannel, 0, wire.AppendStr8(nil, "c")); h.Status != wire.StatusNotPermitted {
		t.Fatalf("RemoveChannel as app: %v", h.Status)
	}
	adm := dialRaw(t, ts.addr)
	if st := adm.auth("admin", testCreds["admin"]); st != wire.StatusOK {
		t.Fatalf("auth admin: %v", st)
	}
	if h, _ := adm.call(wire.OpRemoveChannel, 0, wire.AppendStr8(nil, "c")); h.Status != wire.StatusOK {
		t.Fatalf("RemoveChannel as admin: %v", h.Status)
	}
	// Unsubscribe drops a subscriber's records: the admin's too.
	unsub := wire.AppendStr8(wire.AppendStr8(nil, "jobs"), "workers")
	if h, _ := r.call(wire.OpUnsubscribe, 0, unsub); h.Status != wire.StatusNotPermitted {
		t.Fatalf("Unsubscribe as app: %v", h.Status)
	}
	if h, body := adm.call(wire.OpUnsubscribe, 0, unsub); h.Status != wire.StatusOK || len(body) != 1 || body[0] != 0 {
		t.Fatalf("Unsubscribe as admin of no subscriber: %v %x", h.Status, body)
	}
	if h, body := r.call(wire.OpSubscribers, 0, wire.AppendStr8(nil, "jobs")); h.Status != wire.StatusOK || len(body) != 4 {
		t.Fatalf("Subscribers as app: %v %x", h.Status, body)
	}
}

func TestAuthFailureClosesConnection(t *testing.T) {
	ts := startServer(t, Config{Credentials: testCreds})
	r := dialRaw(t, ts.addr)
	if st := r.auth("app", []byte("wrong secret....")); st != wire.StatusAuthFailed {
		t.Fatalf("bad proof: %v", st)
	}
	if !r.closed() {
		t.Fatal("connection kept after a failed AUTH")
	}
	// A proof cannot be replayed on another connection: its nonce differs.
	a := dialRaw(t, ts.addr)
	nonce := a.hello()
	proof := auth.Proof(testCreds["app"], nonce, "app")
	b := dialRaw(t, ts.addr)
	b.hello()
	h, _ := b.call(wire.OpAuth, 0, append(wire.AppendStr8(nil, "app"), proof...))
	if h.Status != wire.StatusAuthFailed {
		t.Fatalf("replayed proof: %v", h.Status)
	}
	// AUTH before HELLO is refused with a hint.
	c := dialRaw(t, ts.addr)
	h, msg := c.call(wire.OpAuth, 0, append(wire.AppendStr8(nil, "app"), proof...))
	if h.Status != wire.StatusBadRequest {
		t.Fatalf("AUTH before HELLO: %v %s", h.Status, msg)
	}
}

func TestHelloReportsNode(t *testing.T) {
	ts := startServer(t, Config{NodeID: "n1", Version: "1.2.3"})
	r := dialRaw(t, ts.addr)
	b := wire.AppendStr8(nil, "test")
	b = wire.AppendU16(b, wire.Version)
	b = wire.AppendU32(b, 0)
	h, body := r.call(wire.OpHello, 0, b)
	d := wire.NewDecoder(body)
	if h.Status != wire.StatusOK || string(d.Bytes8()) != "n1" || string(d.Bytes8()) != "1.2.3" || d.U16() != testVBuckets {
		t.Fatalf("HELLO answer %v %q", h.Status, body)
	}
	if d.U32()&FeatureKV == 0 || d.U8() != 0 || len(d.Rest()) != wire.NonceLen {
		t.Fatal("HELLO features, auth flag or nonce wrong")
	}
	b = wire.AppendStr8(nil, "test")
	b = wire.AppendU16(b, 99)
	b = wire.AppendU32(b, 0)
	if h, _ := r.call(wire.OpHello, 0, b); h.Status != wire.StatusUnsupported {
		t.Fatalf("HELLO with version 99: %v", h.Status)
	}
}

// selfSigned returns a TLS certificate for 127.0.0.1 and a pool trusting it.
func selfSigned(t testing.TB) (tls.Certificate, *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "shoal test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, pool
}

func TestTLS(t *testing.T) {
	cert, pool := selfSigned(t)
	ts := startServer(t, Config{TLS: &tls.Config{Certificates: []tls.Certificate{cert}}})
	nc, err := tls.Dial("tcp", ts.addr, &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	r := &raw{t: t, nc: nc}
	r.br = newReader(nc)
	if st := r.put("c", "k", "v"); st != wire.StatusOK {
		t.Fatalf("put over TLS: %v", st)
	}
	// A client speaking clear text to a TLS port gets nowhere and does not
	// hurt the node.
	plain := dialRaw(t, ts.addr)
	plain.nc.Write(frame(wire.OpNoop, 0, 1, nil))
	if !plain.closed() {
		t.Fatal("clear-text connection kept on a TLS port")
	}
}
