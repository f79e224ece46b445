"""Test-only launcher: a reaper-manage (or reaper-agent) process with a fault injected at
a teardown step boundary, with no hook in the product code.

    python -m tests.functional.faultmatrix.killer [OPTIONS] -- ARGS...

ARGS are reaper-manage's (``--config-file F reap --format json``), or reaper-agent's
with ``--program agent``. STEP is a teardown step name (claim, power_off,
destroy_domain, unplug_vifs, disconnect_volumes, delete_files, undefine_domain,
finalize_db). Points:

``--kill-before STEP``
    SIGKILL once the journal records STEP as started, before the step acts.
``--kill-unjournaled STEP``
    SIGKILL after STEP acted, before the journal records it as done.
``--kill-after STEP``
    SIGKILL right after the journal records STEP as done.
``--hold-before-act`` / ``--hold-before STEP`` / ``--hold-after STEP``
    Stop at that point (before a teardown's compare-and-act re-read; or as for the
    kills) until the test releases the pass: the launcher creates ``HOLD_DIR/held``
    and waits for ``HOLD_DIR/release`` (``--hold-dir``; at most ``--hold-timeout``
    seconds, then it exits 99 having done nothing more).
``--only KEY``
    Only for the teardown whose ``instance_uuid`` is KEY (a leak's key for leaks).
``--read-only PATH``
    Bind-mount PATH read-only over itself first. Only inside a private mount
    namespace (``unshare --mount``), so nothing outside this process is affected;
    root ignores mode bits, not a read-only mount.

How: ``reaper.executor.teardown.execute`` journals a step as started, calls
``_run_step``, then journals it as done; the launcher wraps ``_run_step`` (and
``_verify``, the compare-and-act re-read) and, for the "after" points, dies (or
holds) after the next call the executor makes on its state DB once the step
returned, which is the journal's "done" record. The test reads the journal after
the kill to check the point was the one it meant.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time

HELD, RELEASE = "held", "release"
EXIT_HOLD_TIMEOUT = 99


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)              # never reached: SIGKILL cannot be caught


class _Fault:
    """One injected fault: what to do (kill/hold) at which point."""

    def __init__(self, args):
        self.args = args
        self.fired = False

    def _act(self, what: str, point: str) -> None:
        if what == "kill":
            die()
        if self.fired:
            return
        self.fired = True
        d = self.args.hold_dir
        tmp = os.path.join(d, HELD + ".tmp")
        with open(tmp, "w") as f:
            f.write(f"{point}\n{os.getpid()}\n")
        os.rename(tmp, os.path.join(d, HELD))
        deadline = time.monotonic() + self.args.hold_timeout
        while not os.path.exists(os.path.join(d, RELEASE)):
            if time.monotonic() > deadline:
                sys.stderr.write(f"killer: nobody released the hold at {point}\n")
                os._exit(EXIT_HOLD_TIMEOUT)
            time.sleep(0.01)

    def at(self, when: str, step: str, plan) -> None:
        a = self.args
        if a.only and plan.instance_uuid != a.only:
            return
        for what in ("kill", "hold"):
            if getattr(a, f"{what}_{when}".replace("-", "_"), None) == step:
                self._act(what, f"{when} {step}")

    def before_act(self, plan) -> None:
        if self.args.hold_before_act and (not self.args.only
                                          or plan.instance_uuid == self.args.only):
            self._act("hold", "before act")


class _AfterNextCall:
    """Stands for the executor's state DB until its next call returns, then acts."""

    def __init__(self, ctx, real, then):
        self._ctx, self._real, self._then = ctx, real, then

    def __getattr__(self, name):
        attr = getattr(self._real, name)
        if not callable(attr):
            return attr

        def call(*a, **kw):
            self._ctx.state = self._real
            out = attr(*a, **kw)
            self._then()
            return out
        return call


def install(args) -> None:
    from reaper.executor import teardown

    fault = _Fault(args)
    run_step, verify = teardown._run_step, teardown._verify

    def _run_step(ctx, plan, step, resuming, *a, **kw):
        fault.at("before", step, plan)
        detail = run_step(ctx, plan, step, resuming, *a, **kw)
        fault.at("unjournaled", step, plan)
        ctx.state = _AfterNextCall(ctx, ctx.state, lambda: fault.at("after", step, plan))
        return detail

    def _verify(ctx, plan, *a, **kw):
        fault.before_act(plan)
        return verify(ctx, plan, *a, **kw)

    teardown._run_step = _run_step
    teardown._verify = _verify


def read_only(path: str) -> None:
    # The parent (the test) is in the namespace this process must not change.
    if os.readlink("/proc/self/ns/mnt") == os.readlink(f"/proc/{os.getppid()}/ns/mnt"):
        sys.exit("killer: --read-only needs a private mount namespace (unshare --mount)")
    subprocess.run(["mount", "--bind", path, path], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", path], check=True)


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="killer", description=__doc__.split("\n\n")[0])
    for when in ("before", "unjournaled", "after"):
        p.add_argument(f"--kill-{when}", metavar="STEP")
    for when in ("before", "after"):
        p.add_argument(f"--hold-{when}", metavar="STEP")
    p.add_argument("--hold-before-act", action="store_true")
    p.add_argument("--hold-dir", metavar="DIR")
    p.add_argument("--hold-timeout", type=float, default=120.0)
    p.add_argument("--only", metavar="KEY")
    p.add_argument("--read-only", metavar="PATH", action="append", default=[])
    p.add_argument("--program", choices=["manage", "agent"], default="manage")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    args = p.parse_args(argv)
    if args.rest[:1] == ["--"]:
        args.rest = args.rest[1:]
    if (args.hold_before or args.hold_after or args.hold_before_act) and not args.hold_dir:
        p.error("a hold needs --hold-dir")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(sys.argv[1:] if argv is None else argv)
    for path in args.read_only:
        read_only(path)
    install(args)
    if args.program == "agent":
        from reaper.cmd import agent as prog
    else:
        from reaper.cmd import manage as prog
    return prog.main(args.rest)


if __name__ == "__main__":
    sys.exit(main())
