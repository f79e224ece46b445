"""Small helpers around a keystoneauth1 Adapter: one request, its status, no raise."""
from __future__ import annotations

from typing import Any

GONE = 404


class CallFailed(Exception):
    """The service could not be reached or answered with an unexpected status."""


def call(adapter, method: str, url: str, ok: tuple[int, ...], *,
         json: Any = None, microversion: str | None = None,
         also: tuple[int, ...] = ()) -> tuple[int, Any]:
    """(status, JSON body or None) when the status is in ``ok`` or ``also``; else
    CallFailed with the service's answer (or the connection error) in one line."""
    kwargs: dict[str, Any] = {"raise_exc": False}
    if json is not None:
        kwargs["json"] = json
    if microversion is not None:
        kwargs["microversion"] = microversion
    try:
        resp = adapter.request(url, method, **kwargs)
    except Exception as e:  # noqa: BLE001 - keystoneauth1 (connect, auth, catalog) errors
        raise CallFailed(f"{method} {url}: {type(e).__name__}: {e}") from None
    if resp.status_code not in ok + also:
        text = " ".join((resp.text or "").split())[:300]
        raise CallFailed(f"{method} {url}: HTTP {resp.status_code}: {text}")
    try:
        body = resp.json() if resp.content else None
    except ValueError:
        body = None
    return resp.status_code, body
