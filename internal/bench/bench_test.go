package bench

import (
	"strings"
	"testing"
	"time"
)

func TestSummarise(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	l := summarise(ds)
	if l.N != 100 || l.Min != 1 || l.Max != 100 || l.P50 != 51 || l.P95 != 96 || l.P99 != 100 {
		t.Errorf("summarise(1..100 ms) = %+v", l)
	}
	if ds[0] != 100*time.Millisecond {
		t.Error("summarise reordered its input")
	}
	if (summarise(nil) != Latency{}) {
		t.Error("summarise(nil) is not zero")
	}
}

func TestMarkdown(t *testing.T) {
	r := &Report{Host: "h", ForkExec: Latency{N: 1, P50: 2}, HostProcess: Latency{N: 1, P50: 10},
		Alive: []AliveRow{{N: 10, TotalMS: 5, PrivateKiBEach: 1000}}}
	md := r.Markdown()
	for _, want := range []string{"| fork + exec `print(1+1)` (pooled) | 1 | 2.000", "5.00x", "| 10 | 5.0 | 1000 |"} {
		if !strings.Contains(md, want) {
			t.Errorf("markdown lacks %q:\n%s", want, md)
		}
	}
}
