package server

import (
	"bytes"
	_ "embed"
	"strconv"
)

// openAPISpec is the OpenAPI 3 document of the API, served at
// /v1/openapi.json. TestOpenAPIMatchesServer keeps it and the server in step:
// every route, status code and field of the one is in the other.
//
//go:embed openapi.json
var openAPISpec []byte

// openAPIDocument is openAPISpec with info.version set to version.
func openAPIDocument(version string) []byte {
	const placeholder = `"version": "dev"`
	return bytes.Replace(openAPISpec, []byte(placeholder), []byte(`"version": `+strconv.Quote(version)), 1)
}
