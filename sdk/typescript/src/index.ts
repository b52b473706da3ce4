/**
 * Client for the forkvm API: run untrusted code in a fresh KVM sandbox.
 *
 * ```ts
 * import { Sandbox } from "forkvm";
 * const sb = new Sandbox(process.env.FORKVM_API_KEY, "http://127.0.0.1:8080");
 * const result = await sb.run("print(6 * 7)");
 * console.log(result.stdout); // "42\n"
 * ```
 *
 * Uses the global `fetch` (Node.js 18 or later, Deno, Bun, browsers).
 */

export const VERSION = "0.1.0";
export const DEFAULT_BASE_URL = "http://127.0.0.1:8080";

/** Milliseconds a call waits beyond its executions' own time limits. */
const SLACK_MS = 60_000;

/** How a sandbox ended. */
export type Outcome = "ok" | "error" | "timeout" | "memory" | "fault";

/** What became of one execution. A failure of the code itself is a result, not an exception. */
export interface ExecResult {
  id: string;
  stdout: string;
  stderr: string;
  exitCode: number;
  forkTimeMs: number;
  execTimeMs: number;
  /** From the server receiving the request to the result, including any queueing. */
  totalTimeMs: number;
  /** Memory the sandbox dirtied, in KiB. */
  privateKib: number;
  /** "ok" (exited 0), "error" (non-zero exit), "timeout", "memory" or "fault". */
  outcome: Outcome;
  /** Set when a limit or fault ended the sandbox, e.g. "timed out after 2s". */
  error?: string;
  stdoutTruncated: boolean;
  stderrTruncated: boolean;
  /** True when the code ran to the end and exited 0. */
  ok: boolean;
}

/** One execution of a batch. */
export interface Execution {
  code: string;
  language?: string;
  timeoutSeconds?: number;
}

export interface RunOptions {
  /** A language with a template on the server; default "python". */
  language?: string;
  /** Time limit in seconds; default 30 (the server lowers it to its maximum). */
  timeoutSeconds?: number;
  /** Abort the HTTP call (the server then cancels the sandbox). */
  signal?: AbortSignal;
}

export interface SandboxOptions {
  /** Bound every HTTP call, in milliseconds. By default a call may take its time limits plus a minute. */
  httpTimeoutMs?: number;
  /** A fetch implementation; default the global fetch. */
  fetch?: typeof fetch;
}

/** The server's /v1/health answer. */
export interface Health {
  status: "ok" | "starting" | "draining";
  ready: boolean;
  version: string;
  languages: string[];
  templates: { name: string; language: string; created: string; memory_bytes: number }[];
  pool: { size: number; target: number; live: number };
  queue: { running: number; waiting: number; max_concurrent: number; queue_depth: number };
}

/** An error answer from the server, or a failure to reach it. `message` is the server's sentence. */
export class ForkvmError extends Error {
  /** HTTP status; undefined when there was no answer. */
  readonly status: number | undefined;
  /** The answer's X-Request-Id, for finding it in the server's log. */
  readonly requestId: string | undefined;
  /** Seconds to wait before retrying (Retry-After), for 429 and 503. */
  readonly retryAfter: number | undefined;

  constructor(message: string, status?: number, requestId?: string, retryAfter?: number, options?: { cause?: unknown }) {
    super(message, options);
    this.name = new.target.name;
    this.status = status;
    this.requestId = requestId;
    this.retryAfter = retryAfter;
  }
}

/** 400: the request was malformed; the message names the field. */
export class BadRequestError extends ForkvmError {}
/** 401: the API key is missing or not valid. */
export class AuthenticationError extends ForkvmError {}
/** 413: the request body is larger than the server accepts. */
export class PayloadTooLargeError extends ForkvmError {}
/** 429: the key's rate limit is used up; see retryAfter. */
export class RateLimitError extends ForkvmError {}
/** 503: every sandbox slot and queue place is taken, or the server is starting or stopping; see retryAfter. */
export class ServerBusyError extends ForkvmError {}
/** 500 or another unexpected answer: a fault of the server. */
export class ServerError extends ForkvmError {}
/** The server could not be reached, or did not answer in time. */
export class ForkvmConnectionError extends ForkvmError {}

const errorClasses: Record<number, typeof ForkvmError> = {
  400: BadRequestError,
  401: AuthenticationError,
  413: PayloadTooLargeError,
  429: RateLimitError,
  503: ServerBusyError,
};

/** The result as the server sends it. */
interface ExecResultJSON {
  id: string;
  stdout: string;
  stderr: string;
  exit_code: number;
  fork_time_ms: number;
  exec_time_ms: number;
  total_time_ms: number;
  private_kib?: number;
  outcome?: Outcome;
  error?: string;
  stdout_truncated?: boolean;
  stderr_truncated?: boolean;
}

function toResult(r: ExecResultJSON): ExecResult {
  const outcome = r.outcome ?? (r.exit_code === 0 ? "ok" : "error");
  const result: ExecResult = {
    id: r.id,
    stdout: r.stdout,
    stderr: r.stderr,
    exitCode: r.exit_code,
    forkTimeMs: r.fork_time_ms,
    execTimeMs: r.exec_time_ms,
    totalTimeMs: r.total_time_ms,
    privateKib: r.private_kib ?? 0,
    outcome,
    stdoutTruncated: r.stdout_truncated ?? false,
    stderrTruncated: r.stderr_truncated ?? false,
    ok: outcome === "ok" && r.exit_code === 0,
  };
  if (r.error) result.error = r.error;
  return result;
}

function toWire(e: Execution): Record<string, unknown> {
  const body: Record<string, unknown> = { code: e.code };
  if (e.language !== undefined) body.language = e.language;
  if (e.timeoutSeconds !== undefined) body.timeout_seconds = e.timeoutSeconds;
  return body;
}

/** The time limit an execution asks for, in milliseconds, as the server will read it. */
function limitMs(timeoutSeconds: number | undefined): number {
  const t = typeof timeoutSeconds === "number" && timeoutSeconds > 0 ? timeoutSeconds : 30;
  return t * 1000;
}

function waitMs(timeoutSeconds: number | undefined): number {
  return limitMs(timeoutSeconds) + SLACK_MS;
}

/** A client of one forkvm server. Every run gets a fresh sandbox. */
export class Sandbox {
  readonly apiKey: string | undefined;
  readonly baseUrl: string;
  private readonly httpTimeoutMs: number | undefined;
  private readonly fetchFn: typeof fetch;

  /**
   * @param apiKey  sent as "Authorization: Bearer <key>"; omit when the server runs with auth off
   * @param baseUrl the server, default http://127.0.0.1:8080
   */
  constructor(apiKey?: string, baseUrl: string = DEFAULT_BASE_URL, options: SandboxOptions = {}) {
    this.apiKey = apiKey || undefined;
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.httpTimeoutMs = options.httpTimeoutMs;
    this.fetchFn = options.fetch ?? globalThis.fetch.bind(globalThis);
  }

  /** Runs code in a new sandbox. Rejects with a ForkvmError when the server refuses the request. */
  async run(code: string, options: RunOptions = {}): Promise<ExecResult> {
    if (typeof code !== "string") throw new TypeError("code must be a string");
    const exec: Execution = { code };
    if (options.language !== undefined) exec.language = options.language;
    if (options.timeoutSeconds !== undefined) exec.timeoutSeconds = options.timeoutSeconds;
    const answer = await this.call<ExecResultJSON>("POST", "/v1/exec", toWire(exec), waitMs(options.timeoutSeconds), options.signal);
    return toResult(answer);
  }

  /**
   * Runs several executions, each in its own sandbox, in parallel on the
   * server. Each is a code string or an Execution. Results come in the same order.
   */
  async runBatch(executions: Array<string | Execution>, options: { signal?: AbortSignal } = {}): Promise<ExecResult[]> {
    let wait = SLACK_MS;
    const items = executions.map((e) => {
      const exec = typeof e === "string" ? { code: e } : e;
      if (typeof exec !== "object" || exec === null || typeof exec.code !== "string") {
        throw new TypeError("an execution must be a code string or an object with a code string");
      }
      wait += limitMs(exec.timeoutSeconds);
      return toWire(exec);
    });
    const answer = await this.call<{ results: ExecResultJSON[] }>("POST", "/v1/exec/batch", { executions: items }, wait, options.signal);
    return answer.results.map(toResult);
  }

  /** The server's readiness, languages, pool and queue. */
  async health(): Promise<Health> {
    return this.call<Health>("GET", "/v1/health", undefined, SLACK_MS);
  }

  private async call<T>(method: string, path: string, body: unknown, waitForMs: number, signal?: AbortSignal): Promise<T> {
    const headers: Record<string, string> = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    const timeoutMs = this.httpTimeoutMs ?? waitForMs;
    const timeout = AbortSignal.timeout(timeoutMs);
    const init: RequestInit = {
      method,
      headers,
      signal: signal ? anySignal([signal, timeout]) : timeout,
    };
    if (body !== undefined) init.body = JSON.stringify(body);

    let resp: Response;
    try {
      resp = await this.fetchFn(this.baseUrl + path, init);
    } catch (err) {
      if (signal?.aborted) throw err; // the caller's own abort
      if (timeout.aborted) {
        throw new ForkvmConnectionError(`the forkvm server at ${this.baseUrl} did not answer within ${timeoutMs} ms`, undefined, undefined, undefined, { cause: err });
      }
      const reason = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new ForkvmConnectionError(
        `cannot reach the forkvm server at ${this.baseUrl}: ${reason?.code ?? reason?.message ?? String(err)}`,
        undefined, undefined, undefined, { cause: err },
      );
    }
    const text = await resp.text();
    const requestId = resp.headers.get("X-Request-Id") ?? undefined;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch {
      value = undefined;
    }
    if (!resp.ok) {
      const message =
        typeof value === "object" && value !== null && typeof (value as { error?: unknown }).error === "string"
          ? (value as { error: string }).error
          : `the server answered ${resp.status}${text.trim() ? ": " + text.trim().slice(0, 200) : ""}`;
      const ra = Number(resp.headers.get("Retry-After") ?? NaN);
      const Cls = errorClasses[resp.status] ?? ServerError;
      throw new Cls(message, resp.status, requestId, Number.isFinite(ra) ? ra : undefined);
    }
    if (typeof value !== "object" || value === null) {
      throw new ServerError(`the server answered ${resp.status} with a body that is not a JSON object`, resp.status, requestId);
    }
    return value as T;
  }
}

/** A signal that aborts when any of signals does (AbortSignal.any is Node 20+). */
function anySignal(signals: AbortSignal[]): AbortSignal {
  const any = (AbortSignal as unknown as { any?: (s: AbortSignal[]) => AbortSignal }).any;
  if (any) return any(signals);
  const ctl = new AbortController();
  for (const s of signals) {
    if (s.aborted) {
      ctl.abort(s.reason);
      break;
    }
    s.addEventListener("abort", () => ctl.abort(s.reason), { once: true });
  }
  return ctl.signal;
}
