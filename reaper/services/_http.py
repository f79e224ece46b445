"""Small helpers around a keystoneauth1 Adapter: one request, its status, no raise."""
from __future__ import annotations

from typing import Any

from reaper import exception

GONE = 404


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
        raise exception.CallFailed(f"{method} {url}: {type(e).__name__}: {e}") from None
    if resp.status_code not in ok + also:
        text = " ".join((resp.text or "").split())[:300]
        raise exception.CallFailed(f"{method} {url}: HTTP {resp.status_code}: {text}")
    try:
        body = resp.json() if resp.content else None
    except ValueError:
        body = None
    return resp.status_code, body


def token_roles(adapter) -> set[str] | None:
    """The role names of the adapter's token (None: not a Keystone token, e.g.
    auth_type none, or it cannot be had: the caller's first request will tell)."""
    auth = getattr(adapter, "auth", None) or getattr(adapter.session, "auth", None)
    auth = getattr(auth, "user_auth", auth)         # ServiceTokenAuthWrapper
    get_access = getattr(auth, "get_access", None)
    if get_access is None:
        return None
    try:
        return set(get_access(adapter.session).role_names or ())
    except Exception:   # noqa: BLE001 - the request that follows reports it
        return None


def lacks_roles(adapter, wanted: set[str], service: str, why: str) -> str | None:
    """Why the account cannot be trusted to see the instance's resources (it holds
    none of ``wanted``), else None. A service that scopes an account to its own
    project answers 404 for what it hides: without one of these roles a 404 would
    be taken for "already gone", and the step reported done on doubt."""
    roles = token_roles(adapter)
    if roles is None or roles & wanted:
        return None
    return (f"the {service} account has none of the roles {sorted(wanted)} "
            f"(it has {sorted(roles)}): {why}; nothing done")
