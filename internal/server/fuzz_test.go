package server

import (
	"strings"
	"testing"
	"time"
)

var fuzzLimits = limitsView{maxTimeout: time.Minute, maxBatch: 4, languages: []string{"python"}}

// FuzzParseExec feeds arbitrary bodies to the decoder of POST /v1/exec: it
// must never panic, and what it accepts must be a valid request.
func FuzzParseExec(f *testing.F) {
	for _, seed := range []string{
		`{"code": "print(1)"}`,
		`{"code": "x", "language": "python", "timeout_seconds": 2.5}`,
		`{"code": "x", "timeout_seconds": 1e400}`,
		`{"code": "x", "timeout_seconds": -0}`,
		`{"code": "\u0000\ud800"}`,
		`{"code": 1}`, `[]`, `null`, `{}`, `{"code": "x"} trailing`, `{"code":"x","code":5}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := parseExec(data, "", fuzzLimits)
		if err != nil {
			if err.status != 400 || err.msg == "" {
				t.Fatalf("refusal %d %q", err.status, err.msg)
			}
			return
		}
		if req.Language != "python" || req.Timeout <= 0 || req.Timeout > fuzzLimits.maxTimeout {
			t.Fatalf("accepted an invalid request %+v from %q", req, data)
		}
	})
}

// FuzzParseBatch does the same for POST /v1/exec/batch.
func FuzzParseBatch(f *testing.F) {
	for _, seed := range []string{
		`{"executions": [{"code": "a"}, {"code": "b", "timeout_seconds": 3}]}`,
		`{"executions": []}`, `{"executions": [null]}`, `{"executions": [1, "x"]}`,
		`{"executions": [{"code":"1"},{"code":"2"},{"code":"3"},{"code":"4"},{"code":"5"}]}`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		reqs, err := parseBatch(data, fuzzLimits)
		if err != nil {
			if err.status != 400 || err.msg == "" {
				t.Fatalf("refusal %d %q", err.status, err.msg)
			}
			if strings.Contains(err.msg, "executions[") && !strings.Contains(err.msg, `field "executions[`) {
				t.Fatalf("badly quoted field in %q", err.msg)
			}
			return
		}
		if len(reqs) == 0 || len(reqs) > fuzzLimits.maxBatch {
			t.Fatalf("accepted a batch of %d", len(reqs))
		}
		for _, r := range reqs {
			if r.Timeout <= 0 || r.Timeout > fuzzLimits.maxTimeout {
				t.Fatalf("accepted an invalid request %+v", r)
			}
		}
	})
}
