"""Tests of the forkvm Python client against a REAL forkvm server.

The server's URL comes from $FORKVM_URL and its API key from $FORKVM_API_KEY
(unset when the server runs with auth off). sdk/run-tests.sh starts a server
and sets both:

    sdk/run-tests.sh

or, against a server you started yourself:

    FORKVM_URL=http://127.0.0.1:8080 FORKVM_API_KEY=... python3 -m unittest discover -s tests
"""

import os
import sys
import threading
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import forkvm  # noqa: E402
from forkvm import (  # noqa: E402
    AuthenticationError,
    BadRequestError,
    ForkvmConnectionError,
    ForkvmError,
    PayloadTooLargeError,
    RateLimitError,
    Result,
    Sandbox,
    ServerBusyError,
)

URL = os.environ.get("FORKVM_URL", "")
KEY = os.environ.get("FORKVM_API_KEY") or None

NO_SERVER = (
    "FORKVM_URL is not set: these tests need a running forkvm server. "
    "Run sdk/run-tests.sh, which starts one, or set FORKVM_URL (and FORKVM_API_KEY) yourself."
)


def setUpModule():
    if not URL:
        raise RuntimeError(NO_SERVER)


class ClientTest(unittest.TestCase):
    def setUp(self):
        self.sb = Sandbox(KEY, URL)

    def test_run_prints(self):
        r = self.sb.run("print(6 * 7)")
        self.assertIsInstance(r, Result)
        self.assertEqual(r.stdout, "42\n")
        self.assertEqual(r.stderr, "")
        self.assertEqual(r.exit_code, 0)
        self.assertEqual(r.outcome, "ok")
        self.assertTrue(r.ok)
        self.assertIsNone(r.error)
        self.assertRegex(r.id, r"^exec_[0-9a-f]{16}$")
        self.assertGreaterEqual(r.fork_time_ms, 0)
        self.assertGreaterEqual(r.exec_time_ms, 0)
        self.assertGreaterEqual(r.total_time_ms, r.exec_time_ms)
        self.assertFalse(r.stdout_truncated)
        self.assertIn("private_kib", r.raw)

    def test_unicode_and_stderr(self):
        r = self.sb.run("import sys\nprint('héllo ✓')\nprint('warn', file=sys.stderr)")
        self.assertEqual(r.stdout, "héllo ✓\n")
        self.assertEqual(r.stderr, "warn\n")

    def test_exception_is_a_result(self):
        r = self.sb.run("raise ValueError('boom')")
        self.assertEqual(r.exit_code, 1)
        self.assertEqual(r.outcome, "error")
        self.assertFalse(r.ok)
        self.assertIn("ValueError: boom", r.stderr)

    def test_sys_exit(self):
        r = self.sb.run("import sys; sys.exit(3)")
        self.assertEqual(r.exit_code, 3)

    def test_timeout(self):
        start = time.monotonic()
        r = self.sb.run("import time\ntime.sleep(30)", timeout_seconds=0.5)
        self.assertEqual(r.outcome, "timeout")
        self.assertIn("timed out", r.error)
        self.assertLess(time.monotonic() - start, 20)

    def test_batch_in_order(self):
        codes = ["import time; time.sleep(%g); print(%d)" % ((5 - i) * 0.05, i) for i in range(6)]
        results = self.sb.run_batch(codes)
        self.assertEqual([r.stdout for r in results], ["%d\n" % i for i in range(6)])
        self.assertEqual(len({r.id for r in results}), 6)

    def test_batch_dicts(self):
        results = self.sb.run_batch(
            [
                {"code": "print('a')", "language": "python", "timeout_seconds": 5},
                "print('b')",
                {"code": "import sys; sys.exit(2)"},
            ]
        )
        self.assertEqual([r.stdout for r in results], ["a\n", "b\n", ""])
        self.assertEqual(results[2].exit_code, 2)

    def test_batch_errors(self):
        with self.assertRaises(BadRequestError) as cm:
            self.sb.run_batch([])
        self.assertIn("executions", str(cm.exception))
        with self.assertRaises(BadRequestError) as cm:
            self.sb.run_batch([{"code": "print(1)"}, {"code": "print(2)", "timeout_seconds": "soon"}])
        self.assertIn('field "executions[1].timeout_seconds": expected a number', str(cm.exception))
        with self.assertRaises(TypeError):
            self.sb.run_batch([42])

    def test_unknown_language(self):
        with self.assertRaises(BadRequestError) as cm:
            self.sb.run("puts 1", language="ruby")
        e = cm.exception
        self.assertEqual(e.status, 400)
        self.assertIn("available languages: ", str(e))
        self.assertIn("python", str(e))
        self.assertRegex(e.request_id or "", r"^exec_")

    def test_wrong_field_type(self):
        with self.assertRaises(BadRequestError) as cm:
            self.sb.run("print(1)", timeout_seconds="ten")
        self.assertIn('field "timeout_seconds": expected a number', str(cm.exception))

    def test_too_large(self):
        with self.assertRaises(PayloadTooLargeError) as cm:
            self.sb.run("#" + "x" * (2 << 20))
        self.assertEqual(cm.exception.status, 413)
        self.assertIn("larger than the limit", str(cm.exception))

    def test_auth(self):
        if KEY is None:
            # Auth is off: any key, or none, is accepted.
            self.assertEqual(Sandbox("not-a-key", URL).run("print(1)").stdout, "1\n")
            return
        with self.assertRaises(AuthenticationError) as cm:
            Sandbox("not-a-key", URL).run("print(1)")
        self.assertEqual(cm.exception.status, 401)
        self.assertIn("invalid API key", str(cm.exception))
        with self.assertRaises(AuthenticationError):
            Sandbox("", URL).run("print(1)")

    def test_health(self):
        h = self.sb.health()
        self.assertTrue(h["ready"])
        self.assertIn("python", h["languages"])
        for k in ("version", "templates", "pool", "queue"):
            self.assertIn(k, h)

    def test_connection_error(self):
        with self.assertRaises(ForkvmConnectionError) as cm:
            Sandbox(KEY, "http://127.0.0.1:1").run("print(1)")
        self.assertIsNone(cm.exception.status)
        self.assertIn("cannot reach", str(cm.exception))

    def test_errors_are_forkvm_errors(self):
        for cls in (BadRequestError, AuthenticationError, PayloadTooLargeError,
                    RateLimitError, ServerBusyError, ForkvmConnectionError):
            self.assertTrue(issubclass(cls, ForkvmError))
        self.assertEqual(forkvm.__version__, "0.1.0")

    def test_queue_overflow(self):
        q = self.sb.health()["queue"]
        capacity = q["max_concurrent"] + q["queue_depth"]
        if capacity > 100:
            self.skipTest("the server's queue holds %d requests; too many to fill here" % capacity)
        busy, ok, other = [], [], []

        def one():
            try:
                ok.append(self.sb.run("import time; time.sleep(1)"))
            except ServerBusyError as e:
                busy.append(e)
            except Exception as e:  # noqa: BLE001 - reported below
                other.append(e)

        threads = [threading.Thread(target=one) for _ in range(capacity + 8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(other, [])
        self.assertGreater(len(busy), 0, "no request was turned away with 503")
        self.assertTrue(all(r.ok for r in ok))
        self.assertGreaterEqual(busy[0].retry_after, 1)
        self.assertIn("server busy", str(busy[0]))

    def test_zz_rate_limit(self):
        # Requests refused as malformed still cost a token, so this empties
        # the bucket without running any code.
        for _ in range(3000):
            try:
                self.sb.run("print(1)", timeout_seconds=-1)
            except RateLimitError as e:
                self.assertEqual(e.status, 429)
                self.assertGreaterEqual(e.retry_after, 1)
                self.assertIn("rate limit exceeded", str(e))
                time.sleep(e.retry_after + 1)  # leave tokens for whoever runs next
                return
            except BadRequestError:
                continue
        self.skipTest("no 429 after 3000 requests: the server's rate limit is off or very high")


if __name__ == "__main__":
    if not URL:
        print(NO_SERVER, file=sys.stderr)
        sys.exit(2)
    unittest.main()
