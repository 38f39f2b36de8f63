"""HTTP GET from async tests without blocking the event loop the admin server runs on."""

from __future__ import annotations

import urllib.error
import urllib.request

import anyio

__all__ = ["http_get"]


async def http_get(url: str, timeout_secs: float = 5.0) -> tuple[int, str]:
    """``(status, body)``; error statuses (503) are returned, not raised."""

    def get() -> tuple[int, str]:
        try:
            with urllib.request.urlopen(url, timeout=timeout_secs) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            with err:
                return err.code, err.read().decode()

    return await anyio.to_thread.run_sync(get)
