#!/usr/bin/env bash
# Runs the Python and TypeScript SDK tests against a real forkvm server on
# loopback, and exits non-zero if any test fails.
#
# With FORKVM_URL set, the tests use that server (and FORKVM_API_KEY, if set).
# Otherwise this script starts one with auth on and a fresh random key:
#
#   $FORKVM_SERVE_CMD --addr 127.0.0.1:<free port> --keys <keys file>
#
# FORKVM_SERVE_CMD defaults to the SDK development server,
# `go run ./internal/server/testserver` (host python3, no isolation); set it to
# `./forkvm serve` (or any command taking --addr and --keys) to test the real
# engine. The server is stopped with SIGTERM when the tests end.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

log() { printf 'run-tests: %s\n' "$*" >&2; }

tmp=$(mktemp -d)
server_pid=""
cleanup() {
	if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
		# The server runs in its own process group (setsid), so this reaches
		# it even when it was started through `go run`.
		kill -TERM -- "-$server_pid" 2>/dev/null || true
		for _ in $(seq 100); do
			kill -0 "$server_pid" 2>/dev/null || break
			sleep 0.1
		done
		kill -KILL -- "-$server_pid" 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

if [[ -z ${FORKVM_URL:-} ]]; then
	port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
	key=$(python3 -c 'import secrets; print("fk-" + secrets.token_hex(24))')
	printf '["%s"]\n' "$key" >"$tmp/keys.json"
	read -r -a serve <<<"${FORKVM_SERVE_CMD:-go run ./internal/server/testserver}"
	log "starting: ${serve[*]} --addr 127.0.0.1:$port --keys $tmp/keys.json"
	setsid "${serve[@]}" --addr "127.0.0.1:$port" --keys "$tmp/keys.json" >"$tmp/server.log" 2>&1 &
	server_pid=$!
	export FORKVM_URL="http://127.0.0.1:$port" FORKVM_API_KEY="$key"

	# Wait for /v1/health (go run may need to compile first).
	for i in $(seq 600); do
		if python3 - "$FORKVM_URL/v1/health" <<-'EOF' 2>/dev/null; then
			import json, sys, urllib.request
			with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
			    sys.exit(0 if json.load(r).get("ready") else 1)
		EOF
			break
		fi
		if ! kill -0 "$server_pid" 2>/dev/null; then
			log "the server exited before it was ready; its log:"
			cat "$tmp/server.log" >&2
			exit 1
		fi
		if ((i == 600)); then
			log "the server was not ready after 120s; its log:"
			cat "$tmp/server.log" >&2
			exit 1
		fi
		sleep 0.2
	done
	log "server ready at $FORKVM_URL"
else
	log "using the server at $FORKVM_URL"
fi

failed=()

log "Python SDK"
if ! (cd sdk/python && python3 -m unittest discover -s tests -v); then
	failed+=(python)
fi

log "TypeScript SDK"
if ! (cd sdk/typescript && { [[ -d node_modules ]] || npm ci --no-audit --no-fund; } && npm test); then
	failed+=(typescript)
fi

if [[ -n $server_pid ]] && ! kill -0 "$server_pid" 2>/dev/null; then
	log "the server died during the tests; its log:"
	cat "$tmp/server.log" >&2
	failed+=(server)
fi

if ((${#failed[@]})); then
	log "FAILED: ${failed[*]}"
	exit 1
fi
log "all SDK tests passed"
