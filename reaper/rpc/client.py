"""A small client over oslo.messaging for the reaper's RPC (reaper-ctl, tests, bench).

``call`` talks to one host and raises; ``call_host`` never raises and returns a
:class:`HostResult`; ``fan_out`` calls many hosts concurrently (one shared
RPCClient: oslo.messaging's client is safe to share across threads) with a
per-call timeout, and reports progress as answers arrive.

Unreachable means no agent answered: no queue is bound for the host (the call is
published with the mandatory flag, so RabbitMQ returns it at once), or nobody
consumed it before the timeout (the message expires with the timeout, so a host
that comes back later never runs a stale call).
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import logging as std_logging
import os
import threading
import time
from typing import Callable

import oslo_messaging
import oslo_messaging.opts
from oslo_context import context as oslo_context

from reaper import exception
from reaper import rpc


class _FanOutIsNoLeak(std_logging.Filter):
    """oslo.messaging warns "Number of call queues is N ... There could be a leak" when
    more than 10 calls wait for replies at once: a heuristic for long-lived services
    that every fan-out trips. Drop just that record."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Number of call queues is")


std_logging.getLogger("oslo_messaging._drivers.amqpdriver").addFilter(_FanOutIsNoLeak())


class _PoolWaitIsNoLimit(std_logging.Filter):
    """The RabbitMQ driver warns "Connection pool limit exceeded" each time a call
    waits for a free connection of its pool. A fan-out keeps its pool small on
    purpose (see SEND_CONNECTIONS): waiting there is the plan, not a problem."""

    def filter(self, record: std_logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Connection pool limit exceeded")


# oslo_log names the logger of oslo_messaging._drivers.pool after the project
std_logging.getLogger("oslo.messaging._drivers.pool").addFilter(_PoolWaitIsNoLimit())

DEFAULT_TIMEOUT = 10.0
# Connection retries per call (None would retry forever while the broker is down).
SEND_RETRY = 2
# Broker connections a client publishes its calls over (the RabbitMQ driver's
# rpc_conn_pool_size, unless configured). A publish holds a connection for one
# broker round trip (publisher confirms), so a few carry 1,000 calls in a fraction
# of a second, while a connection per call in flight made every fan-out open up to
# --parallel new connections: a TCP and AMQP handshake each, which cost the
# controller and the broker more CPU than the calls themselves, and file
# descriptors the broker runs out of (a stock RabbitMQ takes ~830 sockets).
SEND_CONNECTIONS = 4
# Calls in flight at once in a fan-out. A call in flight is a thread waiting for its
# reply; with few publishing connections it costs no broker resource, so the whole
# fleet is called at once: a host that never answers then delays the report by one
# timeout, not one timeout per PARALLEL hosts that do not answer (which at 100 in
# flight made 1,000 hosts with a few hundred stopped agents take minutes).
PARALLEL = 1000

OK, ERROR, UNREACHABLE = "ok", "error", "unreachable"


# Why a host is unreachable (HostResult.code when state is "unreachable").
NO_AGENT, TIMEOUT, BROKER = "no_agent", "timeout", "broker"


@dataclasses.dataclass
class HostResult:
    host: str
    state: str                      # ok | error | unreachable
    reply: dict | None = None       # the agent's reply when state is ok
    code: str | None = None         # an rpc error code, or NO_AGENT/TIMEOUT/BROKER
    message: str | None = None
    elapsed: float = 0.0


def make_context(user: str | None = None, project: str | None = None,
                 request_id: str | None = None) -> dict:
    """The request context sent with every call (an oslo.context RequestContext as a
    dict, plus user and project names, which its to_dict leaves out). Defaults:
    $OS_USERNAME / $OS_PROJECT_NAME, else the local login name. Never a token."""
    user = user or os.environ.get("OS_USERNAME") or _login()
    project = project or os.environ.get("OS_PROJECT_NAME")
    kw = {"request_id": request_id} if request_id else {}
    ctx = oslo_context.RequestContext(user_name=user, project_name=project,
                                      overwrite=False, **kw)
    d = ctx.to_dict()
    d.update(user_name=user, project_name=project, auth_token=None)
    return d


def _login() -> str | None:
    try:
        return os.getlogin()
    except OSError:
        import getpass
        try:
            return getpass.getuser()
        except (OSError, KeyError, ImportError):  # no name is fine
            return None


def _size_connection_pool(conf, size: int) -> None:
    """Set the RabbitMQ driver's ``[oslo_messaging_rabbit] rpc_conn_pool_size``
    default to ``size``, or its ``conn_pool_min_size`` if larger (a configured value
    stays).

    The driver reads the option in that group in every supported oslo.messaging,
    but older releases (the declared floor among them) list it with the [DEFAULT]
    options (the driver registers those in its group too, [DEFAULT] being a
    deprecated place for it): it is taken from wherever ``list_opts`` lists it and
    registered in the driver's group, the same option the driver registers later."""
    group = "oslo_messaging_rabbit"
    listed = dict(oslo_messaging.opts.list_opts())
    opts = list(listed.get(group, []))
    for name in ("rpc_conn_pool_size", "conn_pool_min_size"):
        if not any(o.dest == name for o in opts):
            opts += [o for o in listed.get(None, []) if o.dest == name]
    conf.register_opts(opts, group=group)
    # the driver refuses a pool smaller than its minimum (2 by default)
    floor = getattr(conf[group], "conn_pool_min_size", 1)
    conf.set_default("rpc_conn_pool_size", max(size, floor), group=group)


def _new_rpc_client(transport, target, **kw):
    """``oslo_messaging.get_rpc_client``; oslo.messaging releases before it (the
    declared floor among them) build the client with the ``RPCClient`` constructor,
    which later releases still accept but log a warning for."""
    get_rpc_client = getattr(oslo_messaging, "get_rpc_client", None)
    if get_rpc_client is None:
        return oslo_messaging.RPCClient(transport, target, **kw)
    return get_rpc_client(transport, target, **kw)


class ReaperClient:
    def __init__(self, conf, timeout: float = DEFAULT_TIMEOUT, context: dict | None = None,
                 url: str | None = None, transport=None, parallel: int | None = None,
                 connections: int = SEND_CONNECTIONS):
        """``parallel``: how many calls will be in flight at once; they are published
        over at most ``connections`` broker connections (the RabbitMQ driver's
        connection pool, unless ``rpc_conn_pool_size`` is configured), never one per
        call in flight."""
        self.timeout = timeout
        self.conf, self.url = conf, url
        self.context = context if context is not None else make_context()
        self._own_transport = transport is None
        if transport is None:
            _size_connection_pool(conf, max(1, min(parallel or connections, connections)))
        self.transport = transport if transport is not None else rpc.get_transport(conf, url)
        self._client = _new_rpc_client(
            self.transport, rpc.target(), timeout=timeout, retry=SEND_RETRY,
            transport_options=oslo_messaging.TransportOptions(at_least_once=True))

    def check_broker(self, timeout: float = 5.0) -> None:
        """Raise Unreachable (code BROKER) unless a broker of the transport URL takes an
        AMQP login within ``timeout`` seconds.

        oslo.messaging retries the connection of its reply queue forever, whatever the
        call's ``retry``, so without this a down broker would hang reaper-ctl.
        Only RabbitMQ URLs are checked; other drivers pass.
        """
        import kombu

        url = oslo_messaging.TransportURL.parse(self.conf, self.url)
        if url.transport not in ("rabbit", "kombu"):
            return
        rconf = self.conf.oslo_messaging_rabbit
        ssl: bool | dict = bool(rconf.ssl)
        if ssl:
            ssl = {k: v for k, v in (("ca_certs", rconf.ssl_ca_file),
                                     ("certfile", rconf.ssl_cert_file),
                                     ("keyfile", rconf.ssl_key_file)) if v} or True
        errors = []
        for h in url.hosts or [None]:
            host, port = (h.hostname if h else None) or "localhost", (h.port if h else None) or 5672
            try:
                with kombu.Connection(
                        transport="pyamqp", hostname=host, port=port,
                        userid=(h.username if h else None) or "guest",
                        password=(h.password if h else None) or "guest",
                        virtual_host=url.virtual_host or "/", ssl=ssl,
                        connect_timeout=timeout) as conn:
                    conn.connect()
                return
            except Exception as e:  # noqa: BLE001 - any failure: try the next broker
                errors.append(f"{host}:{port}: {type(e).__name__}: {e}")
        raise exception.Unreachable("broker", BROKER, "cannot reach the message broker ("
                                    + "; ".join(errors) + ")")

    @property
    def request_id(self) -> str:
        return self.context.get("request_id")

    def close(self) -> None:
        if self._own_transport:
            self.transport.cleanup()

    def __enter__(self) -> "ReaperClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def call_raw(self, host: str, method: str, timeout: float | None = None, **kwargs):
        """Send as given (no local validation): the agent's reply, error replies included.
        Raises oslo.messaging's exceptions."""
        cctxt = self._client.prepare(server=host, version=rpc.VERSION,
                                     timeout=self.timeout if timeout is None else timeout)
        return cctxt.call(self.context, method, **kwargs)

    def call(self, host: str, method: str, timeout: float | None = None, **kwargs) -> dict:
        """One call; the reply on success. Raises BadArgument (checked before
        sending), RemoteCallError or Unreachable."""
        args = {k: v for k, v in rpc.validate(method, kwargs).items() if v is not None
                and not (k == "reason" and v == "")}
        try:
            reply = self.call_raw(host, method, timeout=timeout, **args)
        except oslo_messaging.MessagingTimeout:
            t = self.timeout if timeout is None else timeout
            raise exception.Unreachable(host, TIMEOUT, f"no answer within {t:g}s") from None
        except oslo_messaging.MessageUndeliverable:
            raise exception.Unreachable(
                host, NO_AGENT, "no agent is listening for this host") from None
        except oslo_messaging.MessageDeliveryFailure as e:
            raise exception.Unreachable(
                host, BROKER, f"cannot reach the message broker ({e})") from None
        except oslo_messaging.RemoteError as e:
            # Not our protocol (an agent of another version?): one line, not a traceback.
            raise exception.RemoteCallError(
                host, rpc.INTERNAL, f"{e.exc_type}: {e.value}") from None
        if rpc.is_error(reply):
            err = reply["error"]
            raise exception.RemoteCallError(host, str(err.get("code")), str(err.get("message")))
        if not isinstance(reply, dict):
            raise exception.RemoteCallError(host, rpc.INTERNAL, f"unexpected reply {reply!r:.80}")
        return reply

    def call_host(self, host: str, method: str, timeout: float | None = None,
                  **kwargs) -> HostResult:
        """Like :meth:`call`, but every outcome is a HostResult."""
        t0 = time.monotonic()
        try:
            reply = self.call(host, method, timeout=timeout, **kwargs)
            return HostResult(host, OK, reply=reply, elapsed=time.monotonic() - t0)
        except exception.RemoteCallError as e:
            return HostResult(host, ERROR, code=e.code, message=e.message,
                              elapsed=time.monotonic() - t0)
        except exception.Unreachable as e:
            return HostResult(host, UNREACHABLE, code=e.code, message=e.reason,
                              elapsed=time.monotonic() - t0)
        except exception.BadArgument as e:
            return HostResult(host, ERROR, code=rpc.BAD_ARGUMENT, message=str(e),
                              elapsed=time.monotonic() - t0)
        except Exception as e:  # noqa: BLE001 - one host's surprise is one row, not a crash
            return HostResult(host, ERROR, code=rpc.INTERNAL,
                              message=f"{type(e).__name__}: {e}",
                              elapsed=time.monotonic() - t0)

    def fan_out(self, hosts: list[str], method: str, timeout: float | None = None,
                parallel: int = PARALLEL,
                progress: Callable[[int, int, int], None] | None = None,
                progress_interval: float = 0.25, **kwargs) -> list[HostResult]:
        """Call ``method`` on every host at once (at most ``parallel`` in flight).

        ``progress(answered, unreachable, total)`` is called every
        ``progress_interval`` seconds while waiting, and once at the end.
        Results come back in the order of ``hosts``.
        """
        rpc.validate(method, kwargs)            # one clear error, not one per host
        hosts = list(dict.fromkeys(hosts))
        results: dict[str, HostResult] = {}
        lock = threading.Lock()
        done = threading.Event()

        def one(host: str) -> None:
            r = self.call_host(host, method, timeout=timeout, **kwargs)
            with lock:
                results[host] = r
                if len(results) == len(hosts):
                    done.set()

        def counts() -> tuple[int, int]:
            with lock:
                unreachable = sum(1 for r in results.values() if r.state == UNREACHABLE)
                return len(results) - unreachable, unreachable

        if not hosts:
            return []
        workers = max(1, min(parallel, len(hosts)))
        with concurrent.futures.ThreadPoolExecutor(workers, "reaper-ctl") as pool:
            for h in hosts:
                pool.submit(one, h)
            while not done.wait(progress_interval):
                if progress is not None:
                    progress(*counts(), len(hosts))
        if progress is not None:
            progress(*counts(), len(hosts))
        return [results[h] for h in hosts]
