// Go's crypto/x509 path builder judging a batch of served chains.
//
// Reads a JSON list of {"chain": [PEM...], "store": [PEM...], "at": UNIX} on
// stdin (chain as served: the server's own certificate first) and writes one
// {"ok": bool, "detail": string} per case, in order. Only the path and the
// time are judged: no host name and any extended key usage (the other
// verifiers check neither either).
package main

import (
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
	"time"
)

type request struct {
	Chain []string `json:"chain"`
	Store []string `json:"store"`
	At    int64    `json:"at"`
}

type verdict struct {
	Ok     bool   `json:"ok"`
	Detail string `json:"detail"`
}

func parse(text string) (*x509.Certificate, error) {
	block, _ := pem.Decode([]byte(text))
	if block == nil {
		return nil, fmt.Errorf("no PEM block")
	}
	return x509.ParseCertificate(block.Bytes)
}

func judge(r request) verdict {
	roots := x509.NewCertPool()
	for _, text := range r.Store {
		cert, err := parse(text)
		if err != nil {
			return verdict{false, "store: " + err.Error()}
		}
		roots.AddCert(cert)
	}
	intermediates := x509.NewCertPool()
	var leaf *x509.Certificate
	for i, text := range r.Chain {
		cert, err := parse(text)
		if err != nil {
			return verdict{false, "chain: " + err.Error()}
		}
		if i == 0 {
			leaf = cert
		} else {
			intermediates.AddCert(cert)
		}
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         roots,
		Intermediates: intermediates,
		CurrentTime:   time.Unix(r.At, 0),
		// Any extended key usage: the models do not judge it (x509-limbo's
		// leaves carry whatever their case needs).
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return verdict{false, err.Error()}
	}
	names := make([]string, 0, len(chains[0]))
	for _, cert := range chains[0] {
		names = append(names, cert.Subject.CommonName)
	}
	return verdict{true, "ok: " + strings.Join(names, " <- ")}
}

func main() {
	var requests []request
	if err := json.NewDecoder(os.Stdin).Decode(&requests); err != nil {
		fmt.Fprintln(os.Stderr, "verify:", err)
		os.Exit(2)
	}
	verdicts := make([]verdict, 0, len(requests))
	for _, r := range requests {
		verdicts = append(verdicts, judge(r))
	}
	if err := json.NewEncoder(os.Stdout).Encode(verdicts); err != nil {
		fmt.Fprintln(os.Stderr, "verify:", err)
		os.Exit(2)
	}
}
