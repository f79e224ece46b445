"""The reaper's RPC protocol, shared by the agent's server and reaper-ctl.

Target: topic ``reaper``, server = the compute host's name, version ``1.0``, on
the exchange ``reaper`` (``[DEFAULT] control_exchange``; set here, as Nova sets
``nova``, so the reaper never shares an exchange with a service it does not know).

Methods and their keyword arguments (every one optional):

    audit(instance_uuid)            one report-only pass
    reap(instance_uuid, dry_run)    one pass that acts as configured
    reclaim(instance_uuid, dry_run) one pass that only reclaims soft-deleted instances
    status()                        last pass, journal backlog, guard state, paused
    pause(reason)                   no destructive pass until resume
    resume()
    approve(pass_id)                let a plan blocked by the mass-destruction guard run once

Replies are JSON-safe dicts. A caller's mistake or a refusal comes back as a reply
``{"error": {"code": CODE, "message": TEXT, "host": HOST}}`` (never as an exception in
the server loop); a success reply never has a top-level ``error`` key.

The validators here are pure: the server runs them on every call and reaper-ctl
runs them before sending, so a typo fails at once with the same text.
"""
from __future__ import annotations

import re
import uuid as uuidlib
import warnings
from typing import Any

# oslo.messaging imports oslo.service and futurist, which import eventlet when it is
# installed, and eventlet warns on import; the reaper never uses eventlet (threading
# executor), so keep that warning out of every reaper-ctl run's stderr.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")

import oslo_messaging  # noqa: E402

from reaper import exception  # noqa: E402

TOPIC = "reaper"
VERSION = "1.0"
EXCHANGE = "reaper"

PASS_METHODS = ("audit", "reap", "reclaim")
# method -> the keyword arguments it takes
METHODS: dict[str, tuple[str, ...]] = {
    "audit": ("instance_uuid",),
    "reap": ("instance_uuid", "dry_run"),
    "reclaim": ("instance_uuid", "dry_run"),
    "status": (),
    "pause": ("reason",),
    "resume": (),
    "approve": ("pass_id",),
}

# Error codes of error replies.
BAD_ARGUMENT = "bad_argument"    # the caller sent something malformed
REFUSED = "refused"              # destructive call while [rpc] allow_remote_reap is false
PAUSED = "paused"                # destructive pass on a paused host
BUSY = "busy"                    # another pass held the host's pass lock too long
NOT_FOUND = "not_found"          # approve: no blocked, unapproved pass with that id
INTERNAL = "internal"            # the agent failed; details are in its log

MAX_REASON = 255
_PASS_ID = re.compile(r"^req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

oslo_messaging.set_transport_defaults(control_exchange=EXCHANGE)


def is_destructive(method: str, args: dict) -> bool:
    """Whether a call may destroy something, and so needs ``[rpc] allow_remote_reap``.

    reap and reclaim act unless ``dry_run`` is explicitly true (a missing dry_run
    means "as the host is configured", which may act). approve lets a blocked plan
    run. resume re-enables the destruction that pause stopped, so it is gated too;
    pause is not: stopping destruction must always be possible remotely.
    """
    if method in ("reap", "reclaim"):
        return args.get("dry_run") is not True
    return method in ("approve", "resume")


def _instance_uuid(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise exception.BadArgument(
            f"instance_uuid must be a UUID string, not {type(value).__name__}")
    try:
        parsed = uuidlib.UUID(value.strip())
    except ValueError:
        raise exception.BadArgument(
            f"instance_uuid {_show(value)} is not a UUID "
            f"(expected e.g. 0e7b1b5c-2e1e-4b6f-9a53-5d3f1c1f2a10)") from None
    return str(parsed)


def _dry_run(value: Any) -> bool | None:
    if value is None or isinstance(value, bool):
        return value
    raise exception.BadArgument(f"dry_run must be true, false or absent, not {_show(value)}")


def _reason(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise exception.BadArgument(f"reason must be a string, not {type(value).__name__}")
    if len(value) > MAX_REASON:
        raise exception.BadArgument(f"reason is {len(value)} characters long; at most {MAX_REASON}")
    if _CONTROL.search(value):
        raise exception.BadArgument("reason must be one line of printable text")
    return value.strip()


def _pass_id(value: Any) -> str:
    if value is None:
        raise exception.BadArgument("approve needs a pass_id (see `status`: blocked_passes)")
    if not isinstance(value, str):
        raise exception.BadArgument(f"pass_id must be a string, not {type(value).__name__}")
    pid = value.strip().lower()
    if not _PASS_ID.match(pid):
        raise exception.BadArgument(f"pass_id {_show(value)} is not a pass id "
                                    f"(req-<uuid>, as in a pass report or `status`)")
    return pid


_VALIDATORS = {"instance_uuid": _instance_uuid, "dry_run": _dry_run, "reason": _reason,
               "pass_id": _pass_id}


def validate(method: str, args: dict) -> dict:
    """Check and normalise the keyword arguments of one call.

    Returns every argument the method takes (absent ones filled with their
    defaults, UUIDs in canonical lower case); raises :class:`BadArgument`.
    """
    if method not in METHODS:
        raise exception.BadArgument(f"unknown method {_show(method)}; one of {', '.join(METHODS)}")
    allowed = METHODS[method]
    unexpected = sorted(set(args) - set(allowed))
    if unexpected:
        takes = ", ".join(allowed) or "no arguments"
        raise exception.BadArgument(
            f"{method} does not take {', '.join(unexpected)} (it takes {takes})")
    return {name: _VALIDATORS[name](args.get(name)) for name in allowed}


def error_reply(code: str, message: str, host: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "host": host}}


def is_error(reply: Any) -> bool:
    return isinstance(reply, dict) and isinstance(reply.get("error"), dict)


def _show(value: Any, width: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def prepare_conf(conf) -> None:
    """Make a ConfigOpts other than the global one usable by oslo.messaging.

    oslo.messaging (18.x) registers its tracing and metrics options on
    ``cfg.CONF`` only, but reads them from the ConfigOpts it is given, so a
    private ConfigOpts (reaper-ctl, tests) raises NoSuchOptError on the first call.
    """
    from oslo_config import cfg

    if conf is cfg.CONF:
        return
    for module, group in (("oslo_messaging._tracing.client", "oslo_messaging_tracing"),
                          ("oslo_messaging._metrics.client", "oslo_messaging_metrics")):
        try:
            mod = __import__(module, fromlist=[group])
        except ImportError:         # a version without it does not read it either
            continue
        opts = getattr(mod, group, None)
        if opts is not None:
            conf.register_opts(opts, group=group)


def get_transport(conf, url: str | None = None):
    """The RPC transport for ``[DEFAULT] transport_url`` (or ``url``)."""
    prepare_conf(conf)
    return oslo_messaging.get_rpc_transport(conf, url=url)


def target(host: str | None = None) -> oslo_messaging.Target:
    return oslo_messaging.Target(topic=TOPIC, server=host, version=VERSION)
