"""The agent's RPC server: one endpoint on topic ``reaper``, server = this host.

Every call is validated, checked against ``[rpc] allow_remote_reap`` when it may
destroy something, run through the agent (so it shares the host's one pass lock),
and written to the audit log with the caller's context. The permission and the
pass wait come from the agent's last validated configuration (``agent.config``),
never from the live ConfigOpts: a refused reload cannot grant anything. Whatever
happens, the endpoint returns a JSON-safe dict: a caller's mistake, a refusal or a
failure is an error reply (see :mod:`reaper.rpc`), so the server loop never sees an
exception.
"""
from __future__ import annotations

import threading

import oslo_messaging
from oslo_log import log as logging

from reaper import exception
from reaper import rpc
from reaper.conf import CONF
from reaper.conf import rpc as conf_rpc

LOG = logging.getLogger(__name__)


def caller_of(ctxt) -> dict:
    """Who called, from the request context (an oslo.context dict): what the audit keeps."""
    ctxt = ctxt if isinstance(ctxt, dict) else {}
    caller = {"request_id": ctxt.get("request_id")}
    if ctxt.get("global_request_id"):
        caller["global_request_id"] = ctxt["global_request_id"]
    user = ctxt.get("user_name") or ctxt.get("user_id") or ctxt.get("user")
    project = ctxt.get("project_name") or ctxt.get("project_id") or ctxt.get("project")
    if user:
        caller["user"] = str(user)
    if project:
        caller["project"] = str(project)
    return caller


def _who(caller: dict | None) -> str:
    """The caller in a few words, kept with the pause flag ("paused by ...")."""
    caller = caller or {}
    who = f"user {caller['user']}" if caller.get("user") else "an RPC caller"
    if caller.get("project"):
        who += f" (project {caller['project']})"
    return who + f" over RPC, request {caller.get('request_id') or '?'}"


def _audit_args(args: dict) -> dict:
    """The arguments as the audit shows them: short, and JSON whatever was sent."""
    out = {}
    for k, v in list(args.items())[:10]:
        if not isinstance(v, (str, int, float, bool, type(None))):
            v = repr(v)
        if isinstance(v, str) and len(v) > 100:
            v = v[:97] + "..."
        out[str(k)[:40]] = v
    return out


class ReaperEndpoint:
    """The RPC methods; each takes the request context first (oslo.messaging's ctxt)."""

    target = oslo_messaging.Target(version=rpc.VERSION)

    def __init__(self, agent, conf=CONF):
        self.agent = agent
        # Only for the transport; what a call may do is read from agent.config.
        self.conf = conf

    # -- the methods ------------------------------------------------------------

    def audit(self, ctxt, instance_uuid=None, **unexpected):
        """One report-only pass (never changes anything)."""
        return self._call(ctxt, "audit", dict(instance_uuid=instance_uuid, **unexpected))

    def reap(self, ctxt, instance_uuid=None, dry_run=None, **unexpected):
        """One pass that acts as configured; ``dry_run=True`` only plans."""
        return self._call(ctxt, "reap", dict(instance_uuid=instance_uuid, dry_run=dry_run,
                                             **unexpected))

    def reclaim(self, ctxt, instance_uuid=None, dry_run=None, **unexpected):
        """One pass that only reclaims expired soft-deleted instances."""
        return self._call(ctxt, "reclaim", dict(instance_uuid=instance_uuid, dry_run=dry_run,
                                                **unexpected))

    def status(self, ctxt, **unexpected):
        return self._call(ctxt, "status", dict(unexpected))

    def pause(self, ctxt, reason=None, **unexpected):
        """Stop destructive passes (audits and dry runs go on) until resume."""
        return self._call(ctxt, "pause", dict(reason=reason, **unexpected))

    def resume(self, ctxt, **unexpected):
        return self._call(ctxt, "resume", dict(unexpected))

    def approve(self, ctxt, pass_id=None, **unexpected):
        """Let the plan of a pass the mass-destruction guard blocked run once: the
        next reap pass whose plan it covers runs it."""
        return self._call(ctxt, "approve", dict(pass_id=pass_id, **unexpected))

    # -- one call, start to end -----------------------------------------------------

    def _call(self, ctxt, method: str, raw: dict) -> dict:
        sent = {k: v for k, v in raw.items() if v is not None}
        caller = caller_of(ctxt)
        try:
            args = rpc.validate(method, sent)
        except exception.BadArgument as e:
            return self._refuse(method, caller, sent, "error", rpc.BAD_ARGUMENT, str(e))
        try:
            settings = self.agent.config.rpc      # one snapshot for the whole call
            if rpc.is_destructive(method, args) and not settings.allow_remote_reap:
                return self._refuse(
                    method, caller, sent, "refused", rpc.REFUSED,
                    f"{method} is destructive and [rpc] allow_remote_reap is false on "
                    f"{self.agent.host}" + (" (dry_run=true only plans)"
                                            if method in ("reap", "reclaim") else ""))
            reply, pass_id = self._run(method, args, settings, caller)
        except exception.Busy as e:
            return self._refuse(method, caller, sent, "busy", rpc.BUSY, str(e))
        except exception.Paused as e:
            return self._refuse(method, caller, sent, "refused", rpc.PAUSED, str(e))
        except Exception as e:  # a failure is a reply, never a dead loop
            LOG.exception("RPC %s from %s failed", method, caller)
            return self._refuse(method, caller, sent, "error", rpc.INTERNAL,
                                f"{method} failed on {self.agent.host}: {e}")
        if rpc.is_error(reply):
            return self._refuse(method, caller, sent, "error", reply["error"]["code"],
                                reply["error"]["message"], pass_id)
        self._audit(method, caller, sent, "ok", "done", pass_id)
        return reply

    def _run(self, method: str, args: dict, settings,
             caller: dict | None = None) -> tuple[dict, str]:
        agent = self.agent
        if method in rpc.PASS_METHODS:
            rep = agent.run_pass(method, dry_run=args.get("dry_run"),
                                 only_uuid=args["instance_uuid"], source="rpc",
                                 wait=settings.pass_wait_timeout)
            return rep.as_dict(), rep.pass_id
        if method == "status":
            return agent.status(), "-"
        if method == "pause":
            return agent.pause(args["reason"], by=_who(caller)), "-"
        if method == "resume":
            return agent.resume(by=_who(caller)), "-"
        pid = args["pass_id"]
        if not agent.approve(pid):
            return rpc.error_reply(rpc.NOT_FOUND,
                                   f"no blocked, unapproved pass {pid} on {agent.host}",
                                   agent.host), pid
        return {"host": agent.host, "approved": pid,
                "message": f"approved {pid}: the next reap pass may run its plan once"}, pid

    def _refuse(self, method, caller, sent, result, code, message, pass_id="-") -> dict:
        self._audit(method, caller, sent, result, message, pass_id)
        return rpc.error_reply(code, message, self.agent.host)

    def _audit(self, method, caller, sent, result, reason, pass_id) -> None:
        try:
            self.agent.reaper.audit.record("rpc_call", pass_id or "-", method=method,
                                           caller=caller, args=_audit_args(sent),
                                           result=result, reason=reason)
        except Exception:  # an unwritable audit log must not kill the reply
            LOG.exception("cannot audit RPC %s", method)


def build_server(conf, agent) -> oslo_messaging.RPCServer:
    """The agent's RPC server (not started): ``server.start()``; on exit
    :func:`stop_server` (or ``server.stop(); server.wait()``, then
    ``server.transport.cleanup()``)."""
    conf_rpc.register_opts(conf)
    transport = rpc.get_transport(conf)
    # No executor argument (deprecated in oslo.messaging 18): it picks "threading"
    # unless eventlet monkey-patched the process, which the reaper never does.
    server = oslo_messaging.get_rpc_server(
        transport, rpc.target(agent.host), [ReaperEndpoint(agent, conf)],
        access_policy=oslo_messaging.DefaultRPCAccessPolicy)
    if getattr(server, "executor_type", "threading") != "threading":
        LOG.warning("RPC server runs the %s executor, not threading: the pass lock "
                    "assumes real threads", server.executor_type)
    return server


def stop_server(*servers) -> None:
    """Stop taking calls, wait for the running ones, close the broker connections.

    An idle listener only notices the stop when its current poll ends (oslo.messaging
    backs off up to 5 s between acks), so several servers are stopped concurrently.
    """
    def stop(server):
        server.stop()
        server.wait()
        server.transport.cleanup()

    if len(servers) == 1:
        stop(servers[0])
        return
    threads = [threading.Thread(target=stop, args=(s,), name="reaper-rpc-stop")
               for s in servers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
