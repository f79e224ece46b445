"""reaper.exception: one base with ``msg_fmt``; Aborted (terminal) and StepFailed
(retried) are what the executor acts on; log lines about one instance carry oslo.log's
``[instance: <uuid>]`` prefix."""
from __future__ import annotations

import datetime
import os
import subprocess
import sys
import textwrap

import pytest
from oslo_config import cfg

from reaper import exception, instancelog
from reaper import state as state_mod
from reaper.executor import teardown
from reaper.objects.fields import Action, Classification
from reaper.objects.plan import TeardownPlan

UUID = "6f1d3c8e-4b2a-4e0f-9c1d-2a3b4c5d6e7f"

MOVED = ("Aborted", "StepFailed", "ServiceFailed", "VolumeError", "UnsafePath",
         "CollectError", "OvsUnavailable", "NetlinkUnavailable", "NovaDBError", "BadNovaURL",
         "StateDBError", "CallFailed", "BadValue", "Busy", "Paused", "BadArgument",
         "RemoteCallError", "Unreachable", "UsageError")


class _Sample(exception.ReaperException):
    msg_fmt = "port %(port)s of %(host)s"


def test_msg_fmt_is_formatted_with_the_keyword_arguments():
    e = _Sample(port="tap1", host="cmp-1")
    assert str(e) == "port tap1 of cmp-1" == e.format_message()
    assert e.kwargs == {"port": "tap1", "host": "cmp-1"}


def test_an_explicit_message_is_used_as_is():
    assert str(_Sample("as the call site wrote it", port="x")) == "as the call site wrote it"
    # Even an empty one: the texts raised today are kept exactly.
    assert str(_Sample("")) == ""


def test_a_format_the_kwargs_do_not_fill_falls_back_to_msg_fmt():
    assert str(_Sample(port="tap1")) == _Sample.msg_fmt
    assert str(exception.ReaperException()) == exception.ReaperException.msg_fmt


@pytest.mark.parametrize("name", MOVED)
def test_every_exception_is_on_the_base(name):
    assert issubclass(getattr(exception, name), exception.ReaperException)


def test_terminal_and_retry_are_disjoint():
    assert not issubclass(exception.Aborted, exception.StepFailed)
    assert not issubclass(exception.StepFailed, exception.Aborted)
    for name in ("ServiceFailed", "VolumeError", "UnsafePath"):
        assert issubclass(getattr(exception, name), exception.StepFailed)


def test_standard_bases_that_callers_catch_are_kept():
    assert issubclass(exception.BadArgument, ValueError)
    assert issubclass(exception.BadValue, cfg.ConfigFileValueError)
    assert issubclass(exception.BadValue, ValueError)
    assert issubclass(exception.BadNovaURL, exception.NovaDBError)
    e = exception.BadValue("[reaper] mode: 'x' is not allowed")
    assert str(e) == "[reaper] mode: 'x' is not allowed" and e.msg == str(e)


def test_messages_and_attributes_are_as_before():
    e = exception.RemoteCallError("cmp-1", "busy", "a pass runs")
    assert str(e) == "cmp-1: busy: a pass runs"
    assert (e.host, e.code, e.message) == ("cmp-1", "busy", "a pass runs")
    u = exception.Unreachable("cmp-2", "timeout", "no answer within 5s")
    assert str(u) == "cmp-2: unreachable: no answer within 5s"
    assert (u.host, u.code, u.reason) == ("cmp-2", "timeout", "no answer within 5s")
    assert exception.StateDBError("locked", needs_operator=True).needs_operator
    assert exception.Busy("held", {"pid": 1}).holder == {"pid": 1}
    assert exception.Paused("paused by alice", "rep").report == "rep"


def test_instancelog_gives_the_keyword_only_for_a_uuid():
    assert instancelog.kw(UUID) == {"instance_uuid": UUID}
    assert instancelog.kw("vif:tap1234abcd") == {}
    assert instancelog.kw(None) == {}


# -- what the executor does with each ------------------------------------------------

def _plan(uuid: str = UUID) -> TeardownPlan:
    return TeardownPlan(uuid, Classification.EVACUATED, Action.REAP, "instance-00000001",
                        (), False, False, "evacuated")


def _now() -> datetime.datetime:
    return datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)


@pytest.fixture
def run_failing(tmp_path, monkeypatch):
    """teardown.execute on a real state DB, the first step raising ``exc`` (the
    re-verify is taken as passed: what is under test is the executor's sorting)."""
    st = state_mod.StateDB(str(tmp_path / "state"))

    def run(exc: BaseException, step: str = "destroy_domain"):
        def run_step(ctx, plan, s, *a, **kw):
            if s == step:
                raise exc
            return "ok"
        monkeypatch.setattr(teardown, "_verify", lambda *a, **kw: None)
        monkeypatch.setattr(teardown, "_run_step", run_step)
        ctx = teardown.Context(conn=None, engine=None, state=st, policy=None, clock=_now)
        return teardown.execute(ctx, _plan(), "req-test"), st
    return run


def test_aborted_is_terminal(run_failing):
    out, st = run_failing(exception.Aborted("the plan is gone"))
    assert out.result == "aborted" and out.reason == "the plan is gone"
    assert st.unfinished() == []            # journaled aborted: never resumed


@pytest.mark.parametrize("exc", [
    exception.StepFailed("domain is running again; refusing to undefine"),
    exception.VolumeError("cannot re-read the iSCSI state: x"),
    exception.UnsafePath("/x is a symlink"),
    exception.OvsUnavailable("OVSDB unix:/x: cannot connect (ENOENT)"),
    OSError("EIO"),
], ids=["StepFailed", "VolumeError", "UnsafePath", "OvsUnavailable", "OSError"])
def test_anything_but_aborted_is_retried(run_failing, exc):
    out, st = run_failing(exc)
    assert out.result == "failed" and out.reason == f"destroy_domain failed: {exc}"
    (entry,) = st.unfinished()              # still running: the next pass resumes it
    assert entry.steps == {"destroy_domain": "failed"}
    assert entry.attempts == 2               # the first attempt, and the retry it asks for


# -- [instance: <uuid>] --------------------------------------------------------------

_LOG_RUN = """
    import datetime, sys
    from oslo_config import cfg
    from oslo_log import log
    from reaper import exception, logsetup
    from reaper import state as state_mod
    from reaper.executor import teardown
    from reaper.objects.fields import Action, Classification
    from reaper.objects.plan import TeardownPlan
    logsetup.JOURNAL_SOCKET = "/nonexistent"
    conf = cfg.ConfigOpts()
    log.register_options(conf)
    conf.set_default("use_stderr", True)         # as reaper.config.load does
    conf([], project="reaper-test")
    logsetup.setup(conf, "reaper", "reaper-test")

    def run_step(ctx, plan, step, *a, **kw):
        raise exception.StepFailed("boom")
    teardown._verify = lambda *a, **kw: None
    teardown._run_step = run_step
    now = lambda: datetime.datetime(2026, 1, 1, tzinfo=datetime.timezone.utc)
    st = state_mod.StateDB(sys.argv[1])
    for uuid in sys.argv[2:]:
        plan = TeardownPlan(uuid, Classification.EVACUATED, Action.REAP, "instance-1",
                            (), False, False, "evacuated")
        ctx = teardown.Context(conn=None, engine=None, state=st, policy=None, clock=now)
        teardown.execute(ctx, plan, "req-test")
    """


def test_a_teardown_log_line_carries_the_instance_prefix(tmp_path):
    """Through reaper.logsetup (oslo.log's formatter and format strings), as the
    console scripts log; a leak teardown (no uuid) gets no instance prefix."""
    leak = "vif:tap1234abcd-"
    r = subprocess.run([sys.executable, "-c", textwrap.dedent(_LOG_RUN),
                        str(tmp_path / "state"), UUID, leak],
                       capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert r.returncode == 0, r.stderr
    (line,) = [x for x in r.stderr.splitlines() if f"teardown of {UUID}" in x]
    assert f"[instance: {UUID}] teardown of {UUID}: step destroy_domain failed: boom" in line
    (line,) = [x for x in r.stderr.splitlines() if f"teardown of {leak}" in x]
    assert "[instance:" not in line
