package server_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"time"

	"forkvm/internal/server"
)

// echoEngine stands in for forkvm's sandbox engine in this example: it runs
// nothing and prints the code back.
type echoEngine struct{}

func (echoEngine) Exec(ctx context.Context, req server.ExecRequest) (server.ExecResult, error) {
	return server.ExecResult{Stdout: req.Code + "\n", ForkTime: 400 * time.Microsecond}, nil
}
func (echoEngine) Languages() []string         { return []string{"python"} }
func (echoEngine) Status() server.EngineStatus { return server.EngineStatus{Ready: true} }

func ExampleNew() {
	s, err := server.New(server.Config{Logger: slog.New(slog.DiscardHandler)}, echoEngine{})
	if err != nil {
		panic(err)
	}
	web := httptest.NewServer(s.Handler())
	defer web.Close()

	resp, err := http.Post(web.URL+"/v1/exec", "application/json", strings.NewReader(`{"code": "hello"}`))
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, strings.Contains(string(body), `"stdout":"hello\n"`))
	// Output: 200 true
}
