"""Client for the forkvm API: run untrusted code in a fresh KVM sandbox.

    from forkvm import Sandbox

    sb = Sandbox(api_key="...", base_url="http://127.0.0.1:8080")
    result = sb.run("print(6 * 7)")
    print(result.stdout)          # "42\\n"

The client uses only the Python standard library.
"""

from .client import (
    AuthenticationError,
    BadRequestError,
    ForkvmConnectionError,
    ForkvmError,
    PayloadTooLargeError,
    RateLimitError,
    Result,
    Sandbox,
    ServerBusyError,
    ServerError,
)

__all__ = [
    "AuthenticationError",
    "BadRequestError",
    "ForkvmConnectionError",
    "ForkvmError",
    "PayloadTooLargeError",
    "RateLimitError",
    "Result",
    "Sandbox",
    "ServerBusyError",
    "ServerError",
]

__version__ = "0.1.0"
