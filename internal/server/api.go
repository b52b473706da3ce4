package server

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"reflect"
	"strings"
	"time"
)

// The JSON bodies of the API. The OpenAPI document (openapi.json) describes
// exactly these fields; a test keeps the two in step.

// execRequestJSON is the body of POST /v1/exec and one element of a batch.
// Pointers tell an absent (or null) field from a zero one.
type execRequestJSON struct {
	Code           *string  `json:"code"`
	Language       *string  `json:"language"`
	TimeoutSeconds *float64 `json:"timeout_seconds"`
}

// batchRequestJSON is the body of POST /v1/exec/batch. The executions are
// decoded one by one so that an error can name the one that is wrong.
type batchRequestJSON struct {
	Executions []json.RawMessage `json:"executions"`
}

// execResponseJSON is the answer to one execution.
type execResponseJSON struct {
	ID              string  `json:"id"`
	Stdout          string  `json:"stdout"`
	Stderr          string  `json:"stderr"`
	ExitCode        int     `json:"exit_code"`
	ForkTimeMS      float64 `json:"fork_time_ms"`
	ExecTimeMS      float64 `json:"exec_time_ms"`
	TotalTimeMS     float64 `json:"total_time_ms"`
	PrivateKiB      int64   `json:"private_kib"`
	Error           string  `json:"error,omitempty"`
	Outcome         string  `json:"outcome"`
	StdoutTruncated bool    `json:"stdout_truncated"`
	StderrTruncated bool    `json:"stderr_truncated"`
}

type batchResponseJSON struct {
	Results []execResponseJSON `json:"results"`
}

type errorJSON struct {
	Error string `json:"error"`
}

type healthJSON struct {
	Status    string         `json:"status"` // "ok", "starting" (engine not ready) or "draining" (shutting down)
	Ready     bool           `json:"ready"`
	Version   string         `json:"version"`
	Languages []string       `json:"languages"`
	Templates []templateJSON `json:"templates"`
	Pool      poolJSON       `json:"pool"`
	Queue     queueJSON      `json:"queue"`
}

type templateJSON struct {
	Name        string    `json:"name"`
	Language    string    `json:"language"`
	Created     time.Time `json:"created"`
	MemoryBytes int64     `json:"memory_bytes"`
}

type poolJSON struct {
	Size   int `json:"size"`
	Target int `json:"target"`
	Live   int `json:"live"`
}

type queueJSON struct {
	Running       int `json:"running"`
	Waiting       int `json:"waiting"`
	MaxConcurrent int `json:"max_concurrent"`
	QueueDepth    int `json:"queue_depth"`
}

// apiError is a refusal: an HTTP status and a sentence for the client.
type apiError struct {
	status     int
	msg        string
	retryAfter time.Duration // sent as Retry-After when positive
}

func (e *apiError) Error() string { return e.msg }

func badRequest(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, msg: fmt.Sprintf(format, args...)}
}

// drainLimit is how much of a too-large body the server reads and throws
// away before answering 413. A client such as Python's http.client sends the
// whole body before it reads the answer; if the server closed the connection
// with the body unread, the client would see a reset instead of the 413.
const drainLimit = 8 << 20

// readBody reads a request body of at most limit bytes. w must be the
// http.Server's own ResponseWriter, so that the connection is closed after a
// 413 rather than reused.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, *apiError) {
	tooBig := &apiError{status: http.StatusRequestEntityTooLarge,
		msg: fmt.Sprintf("request body is larger than the limit of %d bytes", limit)}
	if r.ContentLength > limit {
		if r.ContentLength <= limit+drainLimit {
			io.CopyN(io.Discard, r.Body, r.ContentLength)
		}
		return nil, tooBig
	}
	body := r.Body
	data, err := io.ReadAll(http.MaxBytesReader(w, body, limit))
	if err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			io.CopyN(io.Discard, body, drainLimit)
			return nil, tooBig
		}
		return nil, badRequest("could not read the request body: %v", err)
	}
	return data, nil
}

// decodeStrict decodes one JSON value into v, refusing unknown fields and
// trailing data. Errors name the field, prefixed with prefix.
func decodeStrict(data []byte, v any, prefix string) *apiError {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return jsonError(err, v, prefix)
	}
	if _, err := dec.Token(); err != io.EOF {
		return badRequest("%s has data after its JSON value", what(prefix))
	}
	return nil
}

// what names the thing being decoded: the body, or an element of it.
func what(prefix string) string {
	if prefix == "" {
		return "request body"
	}
	return fmt.Sprintf("field %q", strings.TrimSuffix(prefix, "."))
}

func jsonError(err error, v any, prefix string) *apiError {
	if errors.Is(err, io.EOF) && prefix == "" {
		return badRequest("request body is empty; expected a JSON object")
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return badRequest("%s is not valid JSON: it ends too early", what(prefix))
	}
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return badRequest("%s is not valid JSON: %v (at byte %d)", what(prefix), se, se.Offset)
	}
	if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok {
		got := jsonKind(te.Value)
		if te.Field == "" {
			return badRequest("%s: expected %s, got %s", what(prefix), jsonTypeName(reflect.TypeOf(v).Elem()), got)
		}
		return badRequest("field %q: expected %s, got %s", prefix+te.Field, jsonTypeName(te.Type), got)
	}
	if name, ok := strings.CutPrefix(err.Error(), "json: unknown field "); ok {
		return badRequest("field %s: unknown field; known fields are %s",
			quotePrefixed(prefix, name), strings.Join(jsonFieldNames(reflect.TypeOf(v).Elem()), ", "))
	}
	return badRequest("%s is not valid: %v", what(prefix), err)
}

// quotePrefixed turns the quoted name `"x"` into `"prefix.x"`.
func quotePrefixed(prefix, quoted string) string {
	return fmt.Sprintf("%q", prefix+strings.Trim(quoted, `"`))
}

// jsonKind turns UnmarshalTypeError.Value ("string", "number 1.5", ...) into prose.
func jsonKind(value string) string {
	kind, _, _ := strings.Cut(value, " ")
	switch kind {
	case "string", "number", "array", "object":
		if kind == "array" || kind == "object" {
			return "an " + kind
		}
		return "a " + kind
	case "bool":
		return "a boolean"
	case "null":
		return "null"
	}
	return value
}

func jsonTypeName(t reflect.Type) string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.String:
		return "a string"
	case reflect.Float32, reflect.Float64, reflect.Int, reflect.Int64:
		return "a number"
	case reflect.Bool:
		return "a boolean"
	case reflect.Slice:
		if t == reflect.TypeFor[json.RawMessage]() {
			return "a JSON value"
		}
		return "an array"
	}
	return "an object"
}

// jsonFieldNames lists the JSON names of a struct's fields.
func jsonFieldNames(t reflect.Type) []string {
	var names []string
	for f := range t.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// limitsView is what request validation needs to know about the server.
type limitsView struct {
	maxTimeout time.Duration
	maxBatch   int
	languages  []string
}

// parseExec decodes and validates one execution. prefix ("" or
// "executions[3].") goes in front of field names in errors.
func parseExec(data []byte, prefix string, lim limitsView) (ExecRequest, *apiError) {
	var in execRequestJSON
	if err := decodeStrict(data, &in, prefix); err != nil {
		return ExecRequest{}, err
	}
	return in.validate(prefix, lim)
}

func (in execRequestJSON) validate(prefix string, lim limitsView) (ExecRequest, *apiError) {
	if in.Code == nil {
		return ExecRequest{}, badRequest("field %q is required: the code to run", prefix+"code")
	}
	req := ExecRequest{Code: *in.Code, Language: "python", Timeout: min(DefaultTimeout, lim.maxTimeout)}
	if in.Language != nil {
		req.Language = *in.Language
	}
	found := false
	for _, l := range lim.languages {
		found = found || l == req.Language
	}
	if !found {
		if len(lim.languages) == 0 {
			// No template at all is the engine still starting, not a bad request.
			return ExecRequest{}, &apiError{status: http.StatusServiceUnavailable, retryAfter: 5 * time.Second,
				msg: "no sandbox templates are loaded yet; retry shortly"}
		}
		return ExecRequest{}, badRequest("field %q: language %q is not available; available languages: %s",
			prefix+"language", req.Language, strings.Join(lim.languages, ", "))
	}
	if t := in.TimeoutSeconds; t != nil {
		if !(*t > 0) || math.IsInf(*t, 0) {
			return ExecRequest{}, badRequest("field %q: must be a number of seconds greater than 0, got %v", prefix+"timeout_seconds", *t)
		}
		if *t >= lim.maxTimeout.Seconds() {
			req.Timeout = lim.maxTimeout
		} else {
			req.Timeout = max(time.Duration(*t*float64(time.Second)), time.Millisecond)
		}
	}
	return req, nil
}

// parseBatch decodes and validates a batch; every execution is checked
// before any runs.
func parseBatch(data []byte, lim limitsView) ([]ExecRequest, *apiError) {
	// Count first, allocating nothing per element: a 1 MiB body can hold
	// half a million tiny executions, which a full decode would keep.
	if n := countExecutions(data); n > lim.maxBatch {
		return nil, badRequest(`field "executions": a batch holds at most %d executions, got %d; split it`, lim.maxBatch, n)
	}
	var in batchRequestJSON
	if err := decodeStrict(data, &in, ""); err != nil {
		return nil, err
	}
	switch {
	case in.Executions == nil:
		return nil, badRequest(`field "executions" is required: an array of executions`)
	case len(in.Executions) == 0:
		return nil, badRequest(`field "executions": the batch is empty; give at least one execution`)
	case len(in.Executions) > lim.maxBatch:
		return nil, badRequest(`field "executions": a batch holds at most %d executions, got %d; split it`, lim.maxBatch, len(in.Executions))
	}
	reqs := make([]ExecRequest, len(in.Executions))
	for i, raw := range in.Executions {
		prefix := fmt.Sprintf("executions[%d].", i)
		if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
			return nil, badRequest("field %q: expected an object, got null", strings.TrimSuffix(prefix, "."))
		}
		req, err := parseExec(raw, prefix, lim)
		if err != nil {
			return nil, err
		}
		reqs[i] = req
	}
	return reqs, nil
}

// countExecutions returns the number of elements of the top-level
// "executions" array, or -1 when the body is not shaped that way (the full
// decode then says what is wrong).
func countExecutions(data []byte) int {
	dec := json.NewDecoder(bytes.NewReader(data))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return -1
	}
	var skip json.RawMessage // reused: Decode appends into it
	for dec.More() {
		k, err := dec.Token()
		if err != nil {
			return -1
		}
		if k != "executions" {
			if dec.Decode(&skip) != nil {
				return -1
			}
			continue
		}
		if t, err := dec.Token(); err != nil || t != json.Delim('[') {
			return -1
		}
		n := 0
		for dec.More() {
			if dec.Decode(&skip) != nil {
				return -1
			}
			n++
		}
		return n
	}
	return -1
}

// normalizeOutcome keeps the outcome label to the five known values.
func normalizeOutcome(res ExecResult) string {
	switch res.Outcome {
	case OutcomeOK, OutcomeError, OutcomeTimeout, OutcomeMemory, OutcomeFault:
		return res.Outcome
	case "":
		if res.ExitCode == 0 && res.Error == "" {
			return OutcomeOK
		}
		return OutcomeError
	}
	return OutcomeFault
}

func millis(d time.Duration) float64 {
	return math.Round(float64(d)/1e3) / 1e3 // ms with µs precision
}

func toResponse(id string, res ExecResult, outcome string, total time.Duration) execResponseJSON {
	return execResponseJSON{
		ID:              id,
		Stdout:          res.Stdout,
		Stderr:          res.Stderr,
		ExitCode:        res.ExitCode,
		ForkTimeMS:      millis(res.ForkTime),
		ExecTimeMS:      millis(res.ExecTime),
		TotalTimeMS:     millis(total),
		PrivateKiB:      (res.PrivateBytes + 1023) / 1024,
		Error:           res.Error,
		Outcome:         outcome,
		StdoutTruncated: res.StdoutTruncated,
		StderrTruncated: res.StderrTruncated,
	}
}
