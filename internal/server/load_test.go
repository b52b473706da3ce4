package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
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

func TestServerRSS(t *testing.T) {
	ts := startServer(t, Config{KeysFile: writeKeys(t, "k")}, newTestEngine())
	rss, err := ServerRSS(context.Background(), ts.URL, "k")
	if err != nil || rss < 1<<20 {
		t.Errorf("rss %d, %v", rss, err)
	}
	if _, err := ServerRSS(context.Background(), ts.URL, "wrong"); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("wrong key: %v", err)
	}
}

// BenchmarkExec measures the HTTP layer's cost per request on loopback, with
// an engine that does nothing.
func BenchmarkExec(b *testing.B) {
	for _, clients := range []int{1, 8} {
		b.Run(fmt.Sprintf("clients=%d", clients), func(b *testing.B) {
			s, err := New(Config{RatePerSecond: -1, MaxConcurrent: 64, Logger: slog.New(slog.DiscardHandler)}, newTestEngine())
			if err != nil {
				b.Fatal(err)
			}
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- s.Serve(ctx, ln) }()
			defer func() { cancel(); <-done }()

			b.ResetTimer()
			rep, err := Load(context.Background(), LoadConfig{BaseURL: "http://" + ln.Addr().String(), Clients: clients, Requests: b.N, Code: "echo x"})
			if err != nil || rep.Errors > 0 {
				b.Fatalf("%v %+v", err, rep)
			}
			b.ReportMetric(float64(rep.P50.Microseconds()), "p50-µs")
			b.ReportMetric(float64(rep.P99.Microseconds()), "p99-µs")
			b.ReportMetric(rep.Throughput, "req/s")
		})
	}
}
