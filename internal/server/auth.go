package server

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
)

// LoadKeys reads an API keys file: a JSON array of non-empty strings, for
// example ["k1-...", "k2-..."].
func LoadKeys(path string) ([]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read API keys file: %w", err)
	}
	var keys []string
	if err := json.Unmarshal(data, &keys); err != nil {
		return nil, fmt.Errorf("API keys file %s must be a JSON array of strings: %w", path, err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("API keys file %s holds no keys; add at least one, or give no keys file to turn auth off", path)
	}
	seen := make(map[string]bool, len(keys))
	for i, k := range keys {
		if strings.TrimSpace(k) == "" {
			return nil, fmt.Errorf("API keys file %s: key %d is empty", path, i)
		}
		if k != strings.TrimSpace(k) || strings.ContainsAny(k, "\r\n\t") {
			return nil, fmt.Errorf("API keys file %s: key %d has leading, trailing or control whitespace, which an Authorization header cannot carry", path, i)
		}
		if seen[k] {
			return nil, fmt.Errorf("API keys file %s: key %d appears twice", path, i)
		}
		seen[k] = true
	}
	return keys, nil
}

// keyring checks API keys. It keeps only SHA-256 digests of the keys, so
// every comparison is between 32-byte values: the time it takes reveals
// neither a key's length nor how much of it a guess got right.
type keyring struct {
	digests [][sha256.Size]byte
	ids     []string // a non-secret name per key for logs and rate limits
}

func newKeyring(keys []string) *keyring {
	k := &keyring{}
	for _, key := range keys {
		d := sha256.Sum256([]byte(key))
		k.digests = append(k.digests, d)
		k.ids = append(k.ids, keyID(d))
	}
	return k
}

// keyID names a key in logs without revealing it: a prefix of its digest.
func keyID(digest [sha256.Size]byte) string {
	return "key-" + hex.EncodeToString(digest[:4])
}

// match reports which key token is. It compares against every key, never
// stopping early, so its time does not depend on which key matched.
func (k *keyring) match(token string) (id string, ok bool) {
	d := sha256.Sum256([]byte(token))
	found := -1
	for i := range k.digests {
		if subtle.ConstantTimeCompare(d[:], k.digests[i][:]) == 1 {
			found = i
		}
	}
	if found < 0 {
		return "", false
	}
	return k.ids[found], true
}

// authenticate returns the caller's identity: a key id when auth is on,
// otherwise the client's address (so rate limits still apply per caller).
func (s *Server) authenticate(r *http.Request) (string, *apiError) {
	if s.keys == nil {
		return "addr-" + clientHost(r), nil
	}
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", &apiError{status: http.StatusUnauthorized,
			msg: `missing API key: send it in an "Authorization: Bearer <key>" header`}
	}
	scheme, token, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", &apiError{status: http.StatusUnauthorized,
			msg: `malformed Authorization header: expected "Bearer <key>"`}
	}
	id, ok := s.keys.match(strings.TrimSpace(token))
	if !ok {
		return "", &apiError{status: http.StatusUnauthorized, msg: "invalid API key"}
	}
	return id, nil
}

func clientHost(r *http.Request) string {
	host := r.RemoteAddr
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	return strings.Trim(host, "[]")
}
