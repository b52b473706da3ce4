// Tests of the forkvm TypeScript client against a REAL forkvm server, whose
// URL comes from $FORKVM_URL and API key from $FORKVM_API_KEY (unset when the
// server runs with auth off). sdk/run-tests.sh starts a server and sets both.

import { test } from "node:test";
import assert from "node:assert/strict";

import {
  AuthenticationError,
  BadRequestError,
  ForkvmConnectionError,
  ForkvmError,
  PayloadTooLargeError,
  RateLimitError,
  Sandbox,
  ServerBusyError,
  type ExecResult,
} from "../src/index.js";

const URL = process.env.FORKVM_URL ?? "";
const KEY = process.env.FORKVM_API_KEY || undefined;

if (!URL) {
  console.error(
    "FORKVM_URL is not set: these tests need a running forkvm server. " +
      "Run sdk/run-tests.sh, which starts one, or set FORKVM_URL (and FORKVM_API_KEY) yourself.",
  );
  process.exit(2);
}

const sb = new Sandbox(KEY, URL);

test("run prints", async () => {
  const r = await sb.run("print(6 * 7)");
  assert.equal(r.stdout, "42\n");
  assert.equal(r.stderr, "");
  assert.equal(r.exitCode, 0);
  assert.equal(r.outcome, "ok");
  assert.equal(r.ok, true);
  assert.equal(r.error, undefined);
  assert.match(r.id, /^exec_[0-9a-f]{16}$/);
  assert.ok(r.forkTimeMs >= 0 && r.execTimeMs >= 0 && r.totalTimeMs >= r.execTimeMs);
  assert.equal(typeof r.privateKib, "number");
  assert.equal(r.stdoutTruncated, false);
});

test("unicode and stderr", async () => {
  const r = await sb.run("import sys\nprint('héllo ✓')\nprint('warn', file=sys.stderr)");
  assert.equal(r.stdout, "héllo ✓\n");
  assert.equal(r.stderr, "warn\n");
});

test("an exception is a result", async () => {
  const r = await sb.run("raise ValueError('boom')");
  assert.equal(r.exitCode, 1);
  assert.equal(r.outcome, "error");
  assert.equal(r.ok, false);
  assert.match(r.stderr, /ValueError: boom/);
});

test("sys.exit", async () => {
  assert.equal((await sb.run("import sys; sys.exit(3)")).exitCode, 3);
});

test("timeout", async () => {
  const r = await sb.run("import time\ntime.sleep(30)", { timeoutSeconds: 0.5 });
  assert.equal(r.outcome, "timeout");
  assert.match(r.error ?? "", /timed out/);
});

test("batch results come in request order", async () => {
  const codes = [0, 1, 2, 3, 4, 5].map((i) => `import time; time.sleep(${(5 - i) * 0.05}); print(${i})`);
  const results = await sb.runBatch(codes);
  assert.deepEqual(results.map((r) => r.stdout), codes.map((_, i) => `${i}\n`));
  assert.equal(new Set(results.map((r) => r.id)).size, codes.length);
});

test("batch of objects", async () => {
  const results = await sb.runBatch([
    { code: "print('a')", language: "python", timeoutSeconds: 5 },
    "print('b')",
    { code: "import sys; sys.exit(2)" },
  ]);
  assert.deepEqual(results.map((r) => r.stdout), ["a\n", "b\n", ""]);
  assert.equal(results[2]!.exitCode, 2);
});

test("batch errors name the execution", async () => {
  await assert.rejects(sb.runBatch([]), (e: unknown) => e instanceof BadRequestError && /executions/.test(e.message));
  await assert.rejects(
    sb.runBatch([{ code: "print(1)" }, { code: "print(2)", timeoutSeconds: -1 }]),
    (e: unknown) => e instanceof BadRequestError && e.message.includes('field "executions[1].timeout_seconds"'),
  );
});

test("unknown language", async () => {
  await assert.rejects(sb.run("puts 1", { language: "ruby" }), (e: unknown) => {
    assert.ok(e instanceof BadRequestError);
    assert.equal(e.status, 400);
    assert.match(e.message, /available languages: .*python/);
    assert.match(e.requestId ?? "", /^exec_/);
    return true;
  });
});

test("too large", async () => {
  await assert.rejects(sb.run("#" + "x".repeat(2 << 20)), (e: unknown) => {
    assert.ok(e instanceof PayloadTooLargeError);
    assert.equal(e.status, 413);
    assert.match(e.message, /larger than the limit/);
    return true;
  });
});

test("auth", async () => {
  if (KEY === undefined) {
    // Auth is off: any key is accepted.
    assert.equal((await new Sandbox("not-a-key", URL).run("print(1)")).stdout, "1\n");
    return;
  }
  await assert.rejects(new Sandbox("not-a-key", URL).run("print(1)"), (e: unknown) => {
    assert.ok(e instanceof AuthenticationError);
    assert.equal(e.status, 401);
    assert.match(e.message, /invalid API key/);
    return true;
  });
  await assert.rejects(new Sandbox(undefined, URL).run("print(1)"), AuthenticationError);
});

test("health", async () => {
  const h = await sb.health();
  assert.equal(h.ready, true);
  assert.ok(h.languages.includes("python"));
  assert.equal(typeof h.version, "string");
  assert.equal(typeof h.queue.max_concurrent, "number");
});

test("connection error", async () => {
  await assert.rejects(new Sandbox(KEY, "http://127.0.0.1:1").run("print(1)"), (e: unknown) => {
    assert.ok(e instanceof ForkvmConnectionError);
    assert.ok(e instanceof ForkvmError);
    assert.equal(e.status, undefined);
    assert.match(e.message, /cannot reach/);
    return true;
  });
});

test("abort", async () => {
  const ctl = new AbortController();
  const p = sb.run("import time; time.sleep(10)", { signal: ctl.signal });
  setTimeout(() => ctl.abort(), 100);
  await assert.rejects(p, (e: unknown) => (e as Error).name === "AbortError");
});

test("queue overflow", async (t) => {
  const q = (await sb.health()).queue;
  const capacity = q.max_concurrent + q.queue_depth;
  if (capacity > 100) {
    t.skip(`the server's queue holds ${capacity} requests; too many to fill here`);
    return;
  }
  const settled = await Promise.allSettled(
    Array.from({ length: capacity + 8 }, () => sb.run("import time; time.sleep(1)")),
  );
  const busy = settled.flatMap((s) => (s.status === "rejected" && s.reason instanceof ServerBusyError ? [s.reason] : []));
  const other = settled.filter((s) => s.status === "rejected" && !(s.reason instanceof ServerBusyError));
  const ok = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value as ExecResult] : []));
  assert.deepEqual(other, []);
  assert.ok(busy.length > 0, "no request was turned away with 503");
  assert.ok(ok.every((r) => r.ok));
  assert.ok((busy[0]!.retryAfter ?? 0) >= 1);
  assert.match(busy[0]!.message, /server busy/);
});

test("rate limit", async (t) => {
  // Refused requests still cost a token, so this empties the bucket without running code.
  for (let i = 0; i < 3000; i++) {
    try {
      await sb.run("print(1)", { timeoutSeconds: -1 });
    } catch (e) {
      if (e instanceof BadRequestError) continue;
      assert.ok(e instanceof RateLimitError, String(e));
      assert.equal(e.status, 429);
      assert.ok((e.retryAfter ?? 0) >= 1);
      assert.match(e.message, /rate limit exceeded/);
      await new Promise((r) => setTimeout(r, ((e.retryAfter ?? 1) + 1) * 1000));
      return;
    }
  }
  t.skip("no 429 after 3000 requests: the server's rate limit is off or very high");
});
