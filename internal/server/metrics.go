package server

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the server's Prometheus metrics, in a registry of their own so
// that two Servers in one process (as in tests) do not collide.
type metrics struct {
	reg       *prometheus.Registry
	fork      prometheus.Histogram
	exec      prometheus.Histogram
	duration  *prometheus.HistogramVec // by endpoint
	requests  *prometheus.CounterVec   // by endpoint, status
	sandboxes *prometheus.CounterVec   // by outcome
	handler   http.Handler             // serves the registry as Prometheus text
}

func newMetrics(ex Executor) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		fork: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "forkvm_fork_seconds",
			Help: "Time to fork a sandbox from its template.",
			// 25µs .. ~0.4s: forks are meant to take well under a millisecond.
			Buckets: prometheus.ExponentialBuckets(25e-6, 2, 15),
		}),
		exec: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "forkvm_exec_seconds",
			Help:    "Time the code ran inside its sandbox.",
			Buckets: prometheus.ExponentialBuckets(500e-6, 2, 20), // 0.5ms .. ~4.4min
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "forkvm_request_duration_seconds",
			Help:    "Time from receiving an HTTP request to finishing its answer, by endpoint.",
			Buckets: prometheus.ExponentialBuckets(250e-6, 2, 21), // 0.25ms .. ~4.4min
		}, []string{"endpoint"}),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "forkvm_requests_total",
			Help: "HTTP requests answered, by endpoint and status code (499: the client went away first).",
		}, []string{"endpoint", "status"}),
		sandboxes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "forkvm_sandboxes_total",
			Help: "Sandboxes that finished, by outcome: ok, error (non-zero exit), timeout, memory, fault.",
		}, []string{"outcome"}),
	}
	for _, o := range outcomes {
		m.sandboxes.WithLabelValues(o) // export every outcome from the start, at 0
	}
	m.reg.MustRegister(m.fork, m.exec, m.duration, m.requests, m.sandboxes,
		engineCollector{ex},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	m.handler = promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
	return m
}

func (m *metrics) addServerGauges(a *admission) {
	m.reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "forkvm_requests_running",
			Help: "Executions holding a sandbox slot now.",
		}, func() float64 { return float64(a.running()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "forkvm_requests_waiting",
			Help: "Executions waiting in the queue for a sandbox slot.",
		}, func() float64 { return float64(a.waiting()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "forkvm_max_concurrent",
			Help: "Sandbox slots: the most executions that run at once.",
		}, func() float64 { return float64(a.maxRunning) }),
	)
}

func (m *metrics) observeRequest(endpoint string, status int, d time.Duration) {
	m.duration.WithLabelValues(endpoint).Observe(d.Seconds())
	m.requests.WithLabelValues(endpoint, strconv.Itoa(status)).Inc()
}

func (m *metrics) observeSandbox(res ExecResult, outcome string) {
	m.fork.Observe(res.ForkTime.Seconds())
	m.exec.Observe(res.ExecTime.Seconds())
	m.sandboxes.WithLabelValues(outcome).Inc()
}

// engineCollector reads the engine's gauges once per scrape, from one Status call.
type engineCollector struct{ ex Executor }

var (
	liveDesc = prometheus.NewDesc("forkvm_sandboxes_live",
		"Sandboxes that exist now.", nil, nil)
	poolDesc = prometheus.NewDesc("forkvm_pool_size",
		"Prepared sandboxes waiting in the pool.", nil, nil)
	poolTargetDesc = prometheus.NewDesc("forkvm_pool_target",
		"The size the pool is refilled to.", nil, nil)
	readyDesc = prometheus.NewDesc("forkvm_engine_ready",
		"1 when the engine can make sandboxes, 0 otherwise.", nil, nil)
)

func (engineCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- liveDesc
	ch <- poolDesc
	ch <- poolTargetDesc
	ch <- readyDesc
}

func (c engineCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.ex.Status()
	ready := 0.0
	if st.Ready {
		ready = 1
	}
	ch <- prometheus.MustNewConstMetric(liveDesc, prometheus.GaugeValue, float64(st.Live))
	ch <- prometheus.MustNewConstMetric(poolDesc, prometheus.GaugeValue, float64(st.PoolSize))
	ch <- prometheus.MustNewConstMetric(poolTargetDesc, prometheus.GaugeValue, float64(st.PoolTarget))
	ch <- prometheus.MustNewConstMetric(readyDesc, prometheus.GaugeValue, ready)
}
