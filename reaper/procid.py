"""Who a process is, in a way that survives pid reuse: pid + start time + boot id.

The journal records its owner with this, so a later pass can tell an entry whose
owner crashed (resume it) from one whose owner is still alive (leave it alone).
A pid alone is not enough: after a crash the pid may be reused by an unrelated
process, and after a reboot every pid starts over; the process start time (from
``/proc/<pid>/stat``, in clock ticks since boot) and the kernel's boot id tell
those apart.
"""
from __future__ import annotations

import os
import sys

_BOOT_ID = "/proc/sys/kernel/random/boot_id"
_name: str | None = None
# This process's (pid, start time, boot id): they cannot change while the pid is the
# same (a forked child has a pid of its own), so they are read once per pid.
_self: tuple[int, int | None, str | None] | None = None


def set_name(name: str) -> None:
    """How this process is named in journal owners and the pass lock ("reaper-agent",
    "reaper-manage"); the default is the program's file name."""
    global _name
    _name = name


def boot_id() -> str | None:
    try:
        with open(_BOOT_ID) as f:
            return f.read().strip() or None
    except OSError:
        return None


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (starttime), or None when there is no such process.

    The command name (field 2) is in parentheses and may hold spaces and
    parentheses itself, so the fields are counted from the last ')'."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    rest = data[data.rfind(b")") + 2:].split()
    try:
        return int(rest[19])        # fields 3.. follow the name; starttime is the 22nd
    except (IndexError, ValueError):
        return None


def current(name: str | None = None) -> dict:
    """This process, as the journal and the pass lock record it."""
    global _self
    pid = os.getpid()
    if _self is None or _self[0] != pid or _self[1] is None or _self[2] is None:
        _self = (pid, start_time(pid), boot_id())
    return {"pid": pid, "start": _self[1], "boot_id": _self[2],
            "process": name or _name or os.path.basename(sys.argv[0] or "python")}


def same(a: dict | None, b: dict | None) -> bool:
    """Whether two identities name the same process (the name is only a label)."""
    if not a or not b:
        return False
    return (a.get("pid"), a.get("start"), a.get("boot_id")) == \
        (b.get("pid"), b.get("start"), b.get("boot_id"))


def alive(owner: dict | None) -> bool:
    """Whether the process ``owner`` names still runs: same boot, same pid, same start
    time. An identity that cannot be checked (no boot id or start time recorded) is
    taken as alive when its pid exists, which errs towards leaving its work alone."""
    if not owner or not isinstance(owner.get("pid"), int):
        return False
    recorded_boot = owner.get("boot_id")
    if recorded_boot and boot_id() and recorded_boot != boot_id():
        return False            # rebooted since: every process of then is gone
    started = start_time(owner["pid"])
    if started is None:
        return False
    recorded_start = owner.get("start")
    return recorded_start is None or recorded_start == started
