package server

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// openAPIDoc is the part of an OpenAPI document the consistency test reads.
type openAPIDoc struct {
	Info struct {
		Version string `json:"version"`
	} `json:"info"`
	Paths map[string]map[string]struct {
		Security    *[]any `json:"security"`
		RequestBody *struct {
			Content map[string]struct {
				Schema schemaRef `json:"schema"`
			} `json:"content"`
		} `json:"requestBody"`
		Responses map[string]struct {
			Ref     string `json:"$ref"`
			Content map[string]struct {
				Schema schemaRef `json:"schema"`
			} `json:"content"`
		} `json:"responses"`
	} `json:"paths"`
	Components struct {
		Schemas map[string]struct {
			Properties map[string]schemaRef `json:"properties"`
			Required   []string             `json:"required"`
		} `json:"schemas"`
		Responses map[string]any `json:"responses"`
	} `json:"components"`
}

type schemaRef struct {
	Ref   string     `json:"$ref"`
	Type  string     `json:"type"`
	Items *schemaRef `json:"items"`
}

// schemaTypes pairs every schema of the document with the Go type the server
// encodes or decodes for it.
var schemaTypes = map[string]reflect.Type{
	"ExecRequest":  reflect.TypeFor[execRequestJSON](),
	"BatchRequest": reflect.TypeFor[batchRequestJSON](),
	"ExecResult":   reflect.TypeFor[execResponseJSON](),
	"BatchResult":  reflect.TypeFor[batchResponseJSON](),
	"Error":        reflect.TypeFor[errorJSON](),
	"Health":       reflect.TypeFor[healthJSON](),
	"Template":     reflect.TypeFor[templateJSON](),
	"Pool":         reflect.TypeFor[poolJSON](),
	"Queue":        reflect.TypeFor[queueJSON](),
}

// routeBodies names the schemas of each route's request and 200 answer.
var routeBodies = map[string][2]string{
	"POST /v1/exec":       {"ExecRequest", "ExecResult"},
	"POST /v1/exec/batch": {"BatchRequest", "BatchResult"},
	"GET /v1/health":      {"", "Health"},
}

// TestOpenAPIMatchesServer checks that the OpenAPI document and the server
// agree: the same routes and methods, the same status codes per route, the
// same auth per route, and the same fields in every body, both ways round.
func TestOpenAPIMatchesServer(t *testing.T) {
	s, err := New(Config{Version: "9.9.9"}, newTestEngine())
	if err != nil {
		t.Fatal(err)
	}
	var doc openAPIDoc
	if err := json.Unmarshal(s.openapi, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if doc.Info.Version != "9.9.9" {
		t.Errorf("served document has version %q", doc.Info.Version)
	}

	// Routes, both ways.
	documented := map[string]bool{}
	for path, ops := range doc.Paths {
		for method := range ops {
			documented[strings.ToUpper(method)+" "+path] = true
		}
	}
	served := map[string]bool{}
	for _, rt := range s.routes {
		key := rt.method + " " + rt.path
		served[key] = true
		if !documented[key] {
			t.Errorf("route %s is not in the OpenAPI document", key)
			continue
		}
		op := doc.Paths[rt.path][strings.ToLower(rt.method)]

		var codes []int
		for code, resp := range op.Responses {
			n, err := strconv.Atoi(code)
			if err != nil {
				t.Errorf("%s: response %q is not a status code", key, code)
			}
			codes = append(codes, n)
			if ref, ok := strings.CutPrefix(resp.Ref, "#/components/responses/"); ok && doc.Components.Responses[ref] == nil {
				t.Errorf("%s %s: no component response %q", key, code, ref)
			}
		}
		slices.Sort(codes)
		if !slices.Equal(codes, rt.statuses) {
			t.Errorf("%s: document lists statuses %v, server answers %v", key, codes, rt.statuses)
		}

		public := op.Security != nil && len(*op.Security) == 0
		if public != rt.public {
			t.Errorf("%s: document says public=%v, server says %v", key, public, rt.public)
		}

		bodies := routeBodies[key]
		var reqSchema string
		if op.RequestBody != nil {
			reqSchema = refName(op.RequestBody.Content["application/json"].Schema.Ref)
		}
		if reqSchema != bodies[0] {
			t.Errorf("%s: request schema %q, want %q", key, reqSchema, bodies[0])
		}
		if bodies[1] != "" {
			if got := refName(op.Responses["200"].Content["application/json"].Schema.Ref); got != bodies[1] {
				t.Errorf("%s: 200 schema %q, want %q", key, got, bodies[1])
			}
		}
	}
	for key := range documented {
		if !served[key] {
			t.Errorf("the OpenAPI document lists %s, which the server does not serve", key)
		}
	}

	// Fields, both ways, for every schema.
	for name, schema := range doc.Components.Schemas {
		typ, ok := schemaTypes[name]
		if !ok {
			t.Errorf("schema %s has no Go type in schemaTypes", name)
			continue
		}
		goFields := map[string]reflect.StructField{}
		for f := range typ.Fields() {
			jsonName, opts, _ := strings.Cut(f.Tag.Get("json"), ",")
			goFields[jsonName] = f
			prop, ok := schema.Properties[jsonName]
			if !ok {
				t.Errorf("%s: field %q is not in the OpenAPI schema %s", typ.Name(), jsonName, name)
				continue
			}
			// Answers always carry their fields unless omitempty; the
			// document must say which are required.
			isResponse := !strings.HasSuffix(name, "Request")
			required := slices.Contains(schema.Required, jsonName)
			if isResponse && required == strings.Contains(opts, "omitempty") {
				t.Errorf("%s.%s: required=%v, but omitempty=%v", name, jsonName, required, !required)
			}
			if want := openAPIType(f.Type); want != "" && prop.Ref == "" && prop.Type != want {
				t.Errorf("%s.%s: document type %q, Go type %s", name, jsonName, prop.Type, f.Type)
			}
			if prop.Ref != "" && schemaTypes[refName(prop.Ref)] != derefType(f.Type) {
				t.Errorf("%s.%s: $ref %s does not match Go type %s", name, jsonName, prop.Ref, f.Type)
			}
			if prop.Items != nil && prop.Items.Ref != "" && schemaTypes[refName(prop.Items.Ref)] != derefType(f.Type.Elem()) &&
				f.Type.Elem() != reflect.TypeFor[json.RawMessage]() {
				t.Errorf("%s.%s: items $ref %s does not match Go type %s", name, jsonName, prop.Items.Ref, f.Type)
			}
		}
		for prop := range schema.Properties {
			if _, ok := goFields[prop]; !ok {
				t.Errorf("OpenAPI schema %s has field %q, which %s does not", name, prop, typ.Name())
			}
		}
		for _, req := range schema.Required {
			if _, ok := schema.Properties[req]; !ok {
				t.Errorf("schema %s requires %q, which it does not define", name, req)
			}
		}
	}
	for name := range schemaTypes {
		if _, ok := doc.Components.Schemas[name]; !ok {
			t.Errorf("schema %s is missing from the document", name)
		}
	}
}

func refName(ref string) string {
	return strings.TrimPrefix(ref, "#/components/schemas/")
}

func derefType(t reflect.Type) reflect.Type {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	return t
}

func openAPIType(t reflect.Type) string {
	t = derefType(t)
	switch t.Kind() {
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Float64:
		return "number"
	case reflect.Slice:
		return "array"
	}
	if t.String() == "time.Time" {
		return "string"
	}
	return ""
}

func TestOpenAPIServed(t *testing.T) {
	ts := startServer(t, Config{Version: "v0.1.0"}, newTestEngine())
	a := do(t, "GET", ts.URL+"/v1/openapi.json", "", nil)
	var doc map[string]any
	a.decode(t, &doc)
	if a.status != 200 || doc["openapi"] != "3.0.3" || !strings.Contains(string(a.body), `"version": "v0.1.0"`) {
		t.Errorf("%d %.200s", a.status, a.body)
	}
}

// TestAPIDocCoversServer checks that docs/api.md, the user-facing reference,
// has a section for every route and mentions every field and status code.
func TestAPIDocCoversServer(t *testing.T) {
	data, err := os.ReadFile(filepath.Join("..", "..", "docs", "api.md"))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(data)
	s, err := New(Config{}, newTestEngine())
	if err != nil {
		t.Fatal(err)
	}
	for _, rt := range s.routes {
		if !strings.Contains(doc, "\n## "+rt.method+" "+rt.path+"\n") {
			t.Errorf("docs/api.md has no section %q", "## "+rt.method+" "+rt.path)
		}
		for _, code := range rt.statuses {
			if !strings.Contains(doc, fmt.Sprintf("`%d`", code)) {
				t.Errorf("docs/api.md does not mention status %d", code)
			}
		}
	}
	for name, typ := range schemaTypes {
		for _, field := range jsonFieldNames(typ) {
			if !strings.Contains(doc, "`"+field+"`") {
				t.Errorf("docs/api.md does not mention field %s.%s", name, field)
			}
		}
	}
}
