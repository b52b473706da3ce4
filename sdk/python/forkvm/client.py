"""The forkvm API client. Standard library only."""

from __future__ import annotations

import json
import os
import socket
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Mapping, Optional, Union

DEFAULT_BASE_URL = "http://127.0.0.1:8080"

# Seconds the client waits beyond an execution's own time limit, for the
# queue, the fork and the network.
_SLACK_SECONDS = 60.0


class ForkvmError(Exception):
    """An error answer from the forkvm server, or a failure to reach it.

    str(error) is the server's own sentence saying what was wrong.
    """

    def __init__(
        self,
        message: str,
        status: Optional[int] = None,
        request_id: Optional[str] = None,
        retry_after: Optional[float] = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        #: HTTP status of the answer; None when there was no answer.
        self.status = status
        #: The X-Request-Id of the answer, for finding it in the server's log.
        self.request_id = request_id
        #: Seconds to wait before retrying (from Retry-After), for 429 and 503.
        self.retry_after = retry_after


class BadRequestError(ForkvmError):
    """400: the request was malformed (the message names the field)."""


class AuthenticationError(ForkvmError):
    """401: the API key is missing or not valid."""


class PayloadTooLargeError(ForkvmError):
    """413: the request body is larger than the server accepts."""


class RateLimitError(ForkvmError):
    """429: the key's rate limit is used up; see retry_after."""


class ServerBusyError(ForkvmError):
    """503: every sandbox slot and queue place is taken, or the server is
    starting or stopping; see retry_after."""


class ServerError(ForkvmError):
    """500 or another unexpected answer: a fault of the server."""


class ForkvmConnectionError(ForkvmError):
    """The server could not be reached, or did not answer in time."""


_ERRORS = {
    400: BadRequestError,
    401: AuthenticationError,
    413: PayloadTooLargeError,
    429: RateLimitError,
    503: ServerBusyError,
}


@dataclass(frozen=True)
class Result:
    """What became of one execution.

    A failure of the code itself (an exception, a non-zero exit, a time or
    memory limit) is a Result, not an exception: see exit_code, outcome and
    error.
    """

    id: str
    stdout: str
    stderr: str
    exit_code: int
    fork_time_ms: float
    exec_time_ms: float
    total_time_ms: float
    #: Memory the sandbox dirtied, in KiB.
    private_kib: int = 0
    #: "ok", "error" (non-zero exit), "timeout", "memory" or "fault".
    outcome: str = "ok"
    #: Set when a limit or fault ended the sandbox, e.g. "timed out after 2s".
    error: Optional[str] = None
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    #: The answer as the server sent it, including fields this client predates.
    raw: Dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @property
    def ok(self) -> bool:
        """True when the code ran to the end and exited 0."""
        return self.outcome == "ok" and self.exit_code == 0

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> "Result":
        return cls(
            id=str(d.get("id", "")),
            stdout=d.get("stdout", ""),
            stderr=d.get("stderr", ""),
            exit_code=int(d.get("exit_code", 0)),
            fork_time_ms=float(d.get("fork_time_ms", 0.0)),
            exec_time_ms=float(d.get("exec_time_ms", 0.0)),
            total_time_ms=float(d.get("total_time_ms", 0.0)),
            private_kib=int(d.get("private_kib", 0)),
            outcome=d.get("outcome", "ok"),
            error=d.get("error") or None,
            stdout_truncated=bool(d.get("stdout_truncated", False)),
            stderr_truncated=bool(d.get("stderr_truncated", False)),
            raw=dict(d),
        )


Execution = Union[str, Mapping[str, Any]]


class Sandbox:
    """A client of one forkvm server. Every run gets a fresh sandbox.

    api_key defaults to $FORKVM_API_KEY and base_url to $FORKVM_URL, then to
    http://127.0.0.1:8080. http_timeout, if given, bounds every HTTP call in
    seconds; by default a call may take its executions' time limits plus a
    minute. A Sandbox is safe to use from several threads.
    """

    def __init__(
        self,
        api_key: Optional[str] = None,
        base_url: Optional[str] = None,
        *,
        http_timeout: Optional[float] = None,
    ) -> None:
        if api_key is None:
            api_key = os.environ.get("FORKVM_API_KEY") or None
        if base_url is None:
            base_url = os.environ.get("FORKVM_URL") or DEFAULT_BASE_URL
        self.api_key = api_key
        self.base_url = base_url.rstrip("/")
        self.http_timeout = http_timeout

    def run(
        self,
        code: str,
        *,
        language: Optional[str] = None,
        timeout_seconds: Optional[float] = None,
    ) -> Result:
        """Run code in a new sandbox and return its Result.

        Raises a ForkvmError subclass when the server refuses the request.
        """
        body = _execution(code, language, timeout_seconds)
        answer = self._call("POST", "/v1/exec", body, _wait(timeout_seconds))
        return Result.from_json(answer)

    def run_batch(self, executions: Iterable[Execution]) -> List[Result]:
        """Run several executions, each in its own sandbox, in parallel on the
        server. Each is a code string or a dict with "code" and optionally
        "language" and "timeout_seconds". Results come in the same order.
        """
        items = []
        wait = _SLACK_SECONDS
        for e in executions:
            if isinstance(e, str):
                items.append({"code": e})
                wait += _limit(None)
            elif isinstance(e, Mapping):
                items.append(dict(e))
                wait += _limit(e.get("timeout_seconds"))
            else:
                raise TypeError(
                    "an execution must be a code string or a dict, not %s" % type(e).__name__
                )
        answer = self._call("POST", "/v1/exec/batch", {"executions": items}, wait)
        return [Result.from_json(r) for r in answer.get("results", [])]

    def health(self) -> Dict[str, Any]:
        """The server's /v1/health answer: readiness, languages, pool, queue."""
        return self._call("GET", "/v1/health", None, _SLACK_SECONDS)

    def _call(
        self, method: str, path: str, body: Optional[Mapping[str, Any]], wait: float
    ) -> Dict[str, Any]:
        data = None
        headers = {"Accept": "application/json", "User-Agent": "forkvm-python/0.1.0"}
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = "Bearer " + self.api_key
        req = urllib.request.Request(self.base_url + path, data=data, headers=headers, method=method)
        timeout = self.http_timeout if self.http_timeout is not None else wait
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return _decode(resp.read(), resp.status, resp.headers)
        except urllib.error.HTTPError as e:
            raise _error(e.code, e.read(), e.headers) from None
        except urllib.error.URLError as e:
            raise ForkvmConnectionError(
                "cannot reach the forkvm server at %s: %s" % (self.base_url, e.reason)
            ) from e
        except (socket.timeout, TimeoutError) as e:
            raise ForkvmConnectionError(
                "the forkvm server at %s did not answer within %g seconds" % (self.base_url, timeout)
            ) from e
        except (ConnectionError, OSError) as e:
            raise ForkvmConnectionError(
                "lost the connection to the forkvm server at %s: %s" % (self.base_url, e)
            ) from e


def _execution(code: str, language: Optional[str], timeout_seconds: Optional[float]) -> Dict[str, Any]:
    if not isinstance(code, str):
        raise TypeError("code must be a string, not %s" % type(code).__name__)
    body: Dict[str, Any] = {"code": code}
    if language is not None:
        body["language"] = language
    if timeout_seconds is not None:
        body["timeout_seconds"] = timeout_seconds
    return body


def _limit(timeout_seconds: Any) -> float:
    """The time limit an execution asks for, as the server will read it."""
    try:
        t = float(timeout_seconds) if timeout_seconds is not None else 30.0
    except (TypeError, ValueError):
        t = 30.0  # the server will refuse it with a clear message
    return max(t, 0.0)


def _wait(timeout_seconds: Any) -> float:
    return _limit(timeout_seconds) + _SLACK_SECONDS


def _decode(raw: bytes, status: int, headers: Any) -> Dict[str, Any]:
    try:
        value = json.loads(raw.decode("utf-8"))
    except ValueError:
        raise ServerError(
            "the server answered %d with a body that is not JSON: %r" % (status, raw[:200]),
            status=status,
            request_id=headers.get("X-Request-Id"),
        ) from None
    if not isinstance(value, dict):
        raise ServerError(
            "the server answered %d with JSON that is not an object" % status,
            status=status,
            request_id=headers.get("X-Request-Id"),
        )
    return value


def _error(status: int, raw: bytes, headers: Any) -> ForkvmError:
    message = None
    try:
        value = json.loads(raw.decode("utf-8"))
        if isinstance(value, dict) and isinstance(value.get("error"), str):
            message = value["error"]
    except ValueError:
        pass
    if message is None:
        text = raw.decode("utf-8", "replace").strip()[:200]
        message = "the server answered %d%s" % (status, ": " + text if text else "")
    retry_after = None
    if headers is not None and headers.get("Retry-After"):
        try:
            retry_after = float(headers.get("Retry-After"))
        except ValueError:
            pass
    cls = _ERRORS.get(status, ServerError)
    return cls(
        message,
        status=status,
        request_id=headers.get("X-Request-Id") if headers is not None else None,
        retry_after=retry_after,
    )
