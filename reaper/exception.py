"""Every exception the reaper raises, on one base (os-vif's and Nova's ``exception.py``).

:class:`ReaperException` formats its class's ``msg_fmt`` with the keyword arguments
when no message is given, so a class names its message once and a caller passes the
facts (``Unreachable(host=..., code=..., reason=...)``). A message given explicitly
is used as is (the messages raised today are free text built at the call site).

The executor (``reaper.executor.teardown.execute``) sorts what a step raises in two:

- :class:`Aborted` is terminal: the plan is no longer justified; the journal entry
  ends ``aborted`` and nothing more is done for it (``backed_off`` for a lost claim).
- Anything else is retried: the step is journaled ``failed`` and the next pass
  resumes it. :class:`StepFailed` is the reaper's own name for that signal (it was a
  bare ``RuntimeError``); :class:`ServiceFailed`, :class:`VolumeError` and
  :class:`UnsafePath` are kinds of it. Errors of the libraries (libvirt, OSError,
  SQLAlchemy...) are retried the same way without being wrapped.

A class that callers also catch as a standard error keeps that base by multiple
inheritance: :class:`BadArgument` is a ``ValueError``, :class:`BadValue` is
oslo.config's ``ConfigFileValueError`` (a ``ValueError`` too).
"""
from __future__ import annotations

from oslo_config import cfg


class ReaperException(Exception):
    """The base of the reaper's exceptions; ``msg_fmt`` % kwargs when no message is
    given. A format that the kwargs do not fill falls back to ``msg_fmt`` itself: the
    error being raised matters more than a formatting slip in its text."""

    msg_fmt = "An unknown exception occurred."

    def __init__(self, message: str | None = None, **kwargs) -> None:
        self.kwargs = kwargs
        if message is None:
            try:
                message = self.msg_fmt % kwargs
            except (KeyError, TypeError, ValueError):
                message = self.msg_fmt
        super().__init__(message)

    def format_message(self) -> str:
        return self.args[0]


# -- the executor: terminal or retried -----------------------------------------------

class Aborted(ReaperException):
    """The plan is no longer justified; nothing (more) is done."""
    msg_fmt = "the plan is no longer justified"


class StepFailed(ReaperException):
    """A step did not complete; the journal records it failed and the next pass
    retries it (nothing is abandoned)."""
    msg_fmt = "step failed: %(reason)s"


class ServiceFailed(StepFailed):
    """A service step that is not done (raised by the executor's step handlers, so
    the journal records the step failed and retries it)."""

    def __init__(self, result) -> None:
        super().__init__(result.detail)
        self.result = result


class VolumeError(StepFailed):
    """An iSCSI disconnect step could not be done (or not be checked) this pass."""
    msg_fmt = "volume step failed: %(reason)s"


class UnsafePath(StepFailed):
    """The path fails a safety check: nothing was removed."""
    msg_fmt = "%(path)s fails a safety check"


# -- collectors ----------------------------------------------------------------------

class CollectError(ReaperException):
    """An iSCSI collector command failed or timed out."""
    msg_fmt = "iSCSI collection failed: %(reason)s"


class OvsUnavailable(ReaperException):
    """OVSDB could not be reached or did not answer."""
    msg_fmt = "OVSDB is unavailable: %(reason)s"


class NetlinkUnavailable(ReaperException):
    """rtnetlink could not be opened or dumped in the namespace."""
    msg_fmt = "netlink is unavailable: %(reason)s"


# -- databases -----------------------------------------------------------------------

class NovaDBError(ReaperException):
    """A Nova DB operation failed; the message is safe to log (no password, no SQL)."""
    msg_fmt = "Nova DB error: %(reason)s"


class BadNovaURL(NovaDBError):
    """``[database] connection`` cannot work as written: a configuration error."""
    msg_fmt = "[database] connection cannot work: %(reason)s"


class StateDBError(ReaperException):
    """The state DB cannot be read whole or cannot be written: nothing may be done.

    ``needs_operator``: damaged or read-only, which no restart repairs (the agent
    then exits EX_CONFIG, which its unit does not restart); otherwise (locked, say)
    it may pass by itself."""
    msg_fmt = "state DB unusable: %(reason)s"

    def __init__(self, msg: str, needs_operator: bool = False) -> None:
        super().__init__(msg)
        self.needs_operator = needs_operator


# -- services (Neutron, Cinder, Placement) -------------------------------------------

class CallFailed(ReaperException):
    """The service could not be reached or answered with an unexpected status."""
    msg_fmt = "service call failed: %(reason)s"


# -- configuration -------------------------------------------------------------------

class BadValue(ReaperException, cfg.ConfigFileValueError):
    """An option's value is refused; the message names the option, the value, the
    file and what is allowed (not oslo.config's ``LocationInfo(...)``). Still the
    oslo.config error (and a ValueError) that callers catch."""
    msg_fmt = "bad value: %(reason)s"


class KindError(ReaperException, ValueError):
    """``[reaper] resource_kinds`` names a kind that is not installed or cannot be
    loaded, or does not put the primary kind first (a configuration error)."""
    msg_fmt = "bad resource kinds: %(reason)s"


# -- the pass lock and the agent -----------------------------------------------------

class Busy(ReaperException):
    """Another pass held the host's pass lock for longer than the caller would wait."""
    msg_fmt = "another pass holds the pass lock"

    def __init__(self, message: str, holder: dict | None = None) -> None:
        super().__init__(message)
        self.holder = holder


class Paused(ReaperException):
    """The host is paused: the pass refused to destroy (its ``paused`` guard); audits
    and dry runs still run. ``report`` is the refused pass's report."""
    msg_fmt = "the host is paused"

    def __init__(self, message: str, report=None) -> None:
        super().__init__(message)
        self.report = report


# -- RPC and the CLI -----------------------------------------------------------------

class BadArgument(ReaperException, ValueError):
    """An RPC argument that cannot be right; the message says which and why. Still a
    ValueError for callers that catch one."""
    msg_fmt = "bad argument: %(reason)s"


class RemoteCallError(ReaperException):
    """The agent answered with an error reply (refused, busy, bad argument...)."""
    msg_fmt = "%(host)s: %(code)s: %(detail)s"

    def __init__(self, host: str, code: str, message: str) -> None:
        super().__init__(host=host, code=code, detail=message)
        self.host, self.code, self.message = host, code, message


class Unreachable(ReaperException):
    """No agent answered for that host; ``code`` is NO_AGENT, TIMEOUT or BROKER
    (``reaper.rpc.client``)."""
    msg_fmt = "%(host)s: unreachable: %(reason)s"

    def __init__(self, host: str, code: str, reason: str) -> None:
        super().__init__(host=host, code=code, reason=reason)
        self.host, self.code, self.reason = host, code, reason


class UsageError(ReaperException):
    """reaper-ctl was called with arguments that do not go together."""
    msg_fmt = "usage error: %(reason)s"
