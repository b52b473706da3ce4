"""forkvm's guest agent: the program a Python template snapshots.

It imports the modules to preload (FORKVM_PRELOAD, comma-separated), then
reads one request from fd 0. The template is snapshotted at exactly that
read; every sandbox is a fork that resumes there with its own request.

Request (fd 0): a 4-byte little-endian length, then JSON
    {"code": str, "env": {name: value}}
Completion (fd 3): JSON {"exit_code": int, "error": str or null}
Stdout and stderr are fds 1 and 2, captured by the VMM.
"""

import os
import sys

DEFAULT_PRELOAD = "numpy,json,re,math,random,collections,itertools,functools,datetime,hashlib"

for _name in filter(None, os.environ.get("FORKVM_PRELOAD", DEFAULT_PRELOAD).split(",")):
    __import__(_name.strip())

import gc  # noqa: E402
import json  # noqa: E402  (after the preload, which includes it by default)
import traceback  # noqa: E402

CONTROL_FD = 3


def _read_exact(n):
    buf = b""
    while len(buf) < n:
        chunk = os.read(0, n - len(buf))
        if not chunk:
            raise EOFError("request channel closed after %d of %d bytes" % (len(buf), n))
        buf += chunk
    return buf


def _reseed():
    """Give this fork its own random state: the snapshot's is shared by all."""
    seed = int.from_bytes(os.urandom(32), "little")
    import random
    random.seed(seed)  # an int seeds directly; bytes would be hashed first
    np = sys.modules.get("numpy")
    if np is not None:
        np.random.seed(seed & 0xFFFFFFFF)


def _exit_code(exc):
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF
    print(code, file=sys.stderr)
    return 1


def _warm_up():
    """Run the request path once before the snapshot.

    First uses initialise caches and allocate buffers; done here, that work
    lives in the template instead of being repeated, and copied on write, in
    every sandbox.
    """
    import contextlib
    import io
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        scope = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(compile("print(1+1)", "<sandbox>", "exec"), scope)
    json.loads('{"code": "print(1+1)", "env": {}}')
    _reseed()


def main():
    _warm_up()
    # Move everything imported so far out of the collector's sight, so that
    # a collection in a sandbox does not write to (and so copy) every page
    # of the template's objects.
    gc.collect()
    gc.freeze()
    header = _read_exact(4)  # the snapshot point
    request = json.loads(_read_exact(int.from_bytes(header, "little")))
    _reseed()
    os.environ.update(request.get("env") or {})
    status, error = 0, None
    scope = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(request["code"], "<sandbox>", "exec"), scope)
    except SystemExit as exc:
        status = _exit_code(exc)
    except BaseException as exc:  # the user's code failed: report, like python3 would
        traceback.print_exc()
        status, error = 1, "%s: %s" % (type(exc).__name__, exc)
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os.write(CONTROL_FD, json.dumps({"exit_code": status, "error": error}).encode())
    os._exit(status)


main()
