package server

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"
)

// rateLimiter keeps one token bucket per caller. Each execution costs one
// token, so a batch of n costs n: batching does not multiply a key's rate.
type rateLimiter struct {
	limit rate.Limit
	burst int

	mu        sync.Mutex
	buckets   map[string]*bucket
	lastSweep time.Time
}

type bucket struct {
	lim      *rate.Limiter
	lastUsed time.Time
}

// sweepEvery is how often idle buckets are dropped; with auth off callers are
// addresses, and the map must not grow with every address ever seen.
const sweepEvery = time.Minute

func newRateLimiter(perSecond float64, burst int) *rateLimiter {
	rl := &rateLimiter{limit: rate.Limit(perSecond), burst: burst, buckets: map[string]*bucket{}}
	if perSecond < 0 {
		rl.limit = rate.Inf
	}
	return rl
}

// take spends n tokens of caller's bucket. When there are not enough it
// spends none and says how long until there will be.
func (rl *rateLimiter) take(caller string, n int, now time.Time) (ok bool, retryAfter time.Duration) {
	if rl.limit == rate.Inf || n <= 0 {
		return true, 0
	}
	rl.mu.Lock()
	if now.Sub(rl.lastSweep) > sweepEvery {
		rl.sweep(now)
	}
	b := rl.buckets[caller]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(rl.limit, rl.burst)}
		rl.buckets[caller] = b
	}
	b.lastUsed = now
	rl.mu.Unlock()

	res := b.lim.ReserveN(now, n)
	if !res.OK() {
		// More than the burst at once: it can never pass. The server keeps
		// the burst at least MaxBatch, so this is a misconfiguration.
		return false, time.Duration(float64(n) / float64(rl.limit) * float64(time.Second))
	}
	if d := res.DelayFrom(now); d > 0 {
		res.CancelAt(now)
		return false, d
	}
	return true, 0
}

// sweep drops buckets idle long enough to have refilled: a fresh bucket is
// the same as theirs.
func (rl *rateLimiter) sweep(now time.Time) {
	full := time.Duration(float64(rl.burst)/float64(rl.limit)*float64(time.Second)) + time.Second
	for k, b := range rl.buckets {
		if now.Sub(b.lastUsed) > full {
			delete(rl.buckets, k)
		}
	}
	rl.lastSweep = now
}

// admission bounds the work inside the server. A request holds tickets from
// before its body is read until it is answered; there are
// MaxConcurrent+QueueDepth tickets in all, and a request that finds none is
// turned away with 503 at once. Holding a ticket, a request waits for one of
// MaxConcurrent slots to run a sandbox. So at most MaxConcurrent sandboxes
// run, at most QueueDepth requests wait, and nothing else accumulates.
type admission struct {
	mu         sync.Mutex
	tickets    int
	maxTickets int

	slots      chan struct{}
	nWaiting   atomic.Int64
	nRunning   atomic.Int64
	maxRunning int
}

func newAdmission(maxConcurrent, queueDepth int) *admission {
	return &admission{
		maxTickets: maxConcurrent + queueDepth,
		slots:      make(chan struct{}, maxConcurrent),
		maxRunning: maxConcurrent,
	}
}

// admit takes n tickets, all or none.
func (a *admission) admit(n int) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.tickets+n > a.maxTickets {
		return false
	}
	a.tickets += n
	return true
}

func (a *admission) release(n int) {
	a.mu.Lock()
	a.tickets -= n
	a.mu.Unlock()
}

// acquireSlot waits for a sandbox slot; call the returned function to give it back.
func (a *admission) acquireSlot(ctx context.Context) (release func(), err error) {
	a.nWaiting.Add(1)
	select {
	case a.slots <- struct{}{}:
		a.nWaiting.Add(-1)
	case <-ctx.Done():
		a.nWaiting.Add(-1)
		return nil, ctx.Err()
	}
	a.nRunning.Add(1)
	return func() {
		a.nRunning.Add(-1)
		<-a.slots
	}, nil
}

func (a *admission) running() int { return int(a.nRunning.Load()) }
func (a *admission) waiting() int { return int(a.nWaiting.Load()) }
