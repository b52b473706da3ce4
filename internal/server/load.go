package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LoadConfig configures Load.
type LoadConfig struct {
	BaseURL  string        // e.g. "http://127.0.0.1:8080"
	APIKey   string        // sent as a bearer token when not empty
	Clients  int           // concurrent clients, each with one request in flight; default 1
	Duration time.Duration // how long to run; 0 means until Requests are done
	Requests int           // stop after this many requests if > 0
	Code     string        // the code every request runs; default `print("ok")`
}

// LoadReport is what Load measured.
type LoadReport struct {
	Requests     int           // requests answered or failed
	Errors       int           // requests without a 200 answer (transport errors count too)
	Elapsed      time.Duration // from the first request to the last answer
	Throughput   float64       // requests per second
	P50, P99     time.Duration // latency over all requests, as the client saw it
	StatusCounts map[int]int   // answers by HTTP status; 0 counts transport errors
}

// String is a short human-readable summary.
func (r LoadReport) String() string {
	var codes []string
	for _, c := range slices.Sorted(maps.Keys(r.StatusCounts)) {
		name := fmt.Sprint(c)
		if c == 0 {
			name = "transport-error"
		}
		codes = append(codes, fmt.Sprintf("%s:%d", name, r.StatusCounts[c]))
	}
	return fmt.Sprintf("%d requests in %s: %.1f req/s, p50 %s, p99 %s, %d errors [%s]",
		r.Requests, r.Elapsed.Round(time.Millisecond), r.Throughput,
		r.P50.Round(time.Microsecond), r.P99.Round(time.Microsecond), r.Errors, strings.Join(codes, " "))
}

// Load sends POST /v1/exec requests from cfg.Clients concurrent clients for
// cfg.Duration or until cfg.Requests have been sent, whichever comes first,
// and reports throughput and latency. It is the engine of `forkvm bench load`;
// measuring the server's memory is left to the caller.
func Load(ctx context.Context, cfg LoadConfig) (LoadReport, error) {
	if cfg.BaseURL == "" {
		return LoadReport{}, errors.New("load: no base URL")
	}
	if cfg.Duration <= 0 && cfg.Requests <= 0 {
		return LoadReport{}, errors.New("load: give a duration, a number of requests, or both")
	}
	cfg.Clients = max(cfg.Clients, 1)
	if cfg.Code == "" {
		cfg.Code = `print("ok")`
	}
	body, err := json.Marshal(map[string]string{"code": cfg.Code})
	if err != nil {
		return LoadReport{}, err
	}
	url := strings.TrimSuffix(cfg.BaseURL, "/") + "/v1/exec"
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns:        cfg.Clients,
		MaxIdleConnsPerHost: cfg.Clients,
		IdleConnTimeout:     30 * time.Second,
	}}
	defer client.CloseIdleConnections()

	if cfg.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.Duration)
		defer cancel()
	}
	var (
		issued    atomic.Int64
		mu        sync.Mutex
		latencies []time.Duration
		statuses  = map[int]int{}
		wg        sync.WaitGroup
	)
	start := time.Now()
	for range cfg.Clients {
		wg.Go(func() {
			var mine []time.Duration
			counts := map[int]int{}
			for ctx.Err() == nil {
				if cfg.Requests > 0 && issued.Add(1) > int64(cfg.Requests) {
					break
				}
				t0 := time.Now()
				status := loadOne(ctx, client, url, cfg.APIKey, body)
				if status < 0 { // cut short by the end of the run: not a result
					break
				}
				mine = append(mine, time.Since(t0))
				counts[status]++
			}
			mu.Lock()
			latencies = append(latencies, mine...)
			for c, n := range counts {
				statuses[c] += n
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	elapsed := time.Since(start)

	rep := LoadReport{Requests: len(latencies), Elapsed: elapsed, StatusCounts: statuses}
	for c, n := range statuses {
		if c != http.StatusOK {
			rep.Errors += n
		}
	}
	if elapsed > 0 {
		rep.Throughput = float64(rep.Requests) / elapsed.Seconds()
	}
	slices.Sort(latencies)
	rep.P50 = percentile(latencies, 0.50)
	rep.P99 = percentile(latencies, 0.99)
	if err := context.Cause(ctx); err != nil && !errors.Is(err, context.DeadlineExceeded) && rep.Requests == 0 {
		return rep, err
	}
	return rep, nil
}

// loadOne sends one request and returns its status, 0 for a transport error,
// or -1 when ctx ended while it was in flight.
func loadOne(ctx context.Context, client *http.Client, url, key string, body []byte) int {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return 0
	}
	req.Header.Set("Content-Type", "application/json")
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return -1
		}
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// percentile of sorted durations, by the nearest-rank method.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	rank := int(p*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(rank, 0), len(sorted)-1)]
}

// ServerRSS reads the server's resident memory from its /v1/metrics
// (process_resident_memory_bytes), for `forkvm bench load` to compare before
// and after a run when the server is another process.
func ServerRSS(ctx context.Context, baseURL, apiKey string) (int64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(baseURL, "/")+"/v1/metrics", nil)
	if err != nil {
		return 0, err
	}
	if apiKey != "" {
		req.Header.Set("Authorization", "Bearer "+apiKey)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, fmt.Errorf("read server metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return 0, fmt.Errorf("read server metrics: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("read server metrics: status %d: %s", resp.StatusCode, bytes.TrimSpace(body))
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(line, "process_resident_memory_bytes "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				return 0, fmt.Errorf("read server metrics: bad process_resident_memory_bytes %q", v)
			}
			return int64(f), nil
		}
	}
	return 0, errors.New("read server metrics: no process_resident_memory_bytes (is this a forkvm server on Linux?)")
}
