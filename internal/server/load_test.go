package server

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestLoad(t *testing.T) {
	ts := startServer(t, Config{KeysFile: writeKeys(t, "load-key"), RatePerSecond: -1}, newTestEngine())
	rep, err := Load(context.Background(), LoadConfig{BaseURL: ts.URL, APIKey: "load-key", Clients: 4, Requests: 200, Code: "echo x"})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests != 200 || rep.Errors != 0 || rep.StatusCounts[200] != 200 || rep.Throughput <= 0 ||
		rep.P50 <= 0 || rep.P99 < rep.P50 {
		t.Errorf("report %+v", rep)
	}
	if !strings.Contains(rep.String(), "200 requests") {
		t.Errorf("summary %q", rep.String())
	}

	// For a duration, with errors: a wrong key gets 401s.
	rep, err = Load(context.Background(), LoadConfig{BaseURL: ts.URL, APIKey: "wrong", Clients: 2, Duration: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Requests == 0 || rep.Errors != rep.Requests || rep.StatusCounts[401] != rep.Requests {
		t.Errorf("report %+v", rep)
	}
}

func TestLoadNeedsAnEnd(t *testing.T) {
	if _, err := Load(context.Background(), LoadConfig{BaseURL: "http://127.0.0.1:1"}); err == nil {
		t.Error("no duration and no count accepted")
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	if p := percentile(d, 0.5); p != 50 {
		t.Errorf("p50 %d", p)
	}
	if p := percentile(d, 0.99); p != 99 {
		t.Errorf("p99 %d", p)
	}
	if p := percentile(nil, 0.5); p != 0 {
		t.Errorf("empty %d", p)
	}
}
