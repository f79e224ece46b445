"""Run a command in a private mount namespace where /sys, /dev and /etc/iscsi are the
simulated host's (tests/iscsi_sim/sim.py), so that os-brick, whose sysfs and /dev
paths are fixed, sees the simulated initiator. Nothing outside the namespace changes.

    unshare --mount --propagation private /usr/bin/python3 -S nsexec.py ROOT -- CMD...

(``ns_argv`` in tests/iscsi_sim/__init__.py builds that line.)  The real /dev/null,
zero, full, random, urandom, tty, pts and shm are bind-mounted into ROOT/dev first.
"""
import os
import subprocess
import sys

_DEV_NODES = ("null", "zero", "full", "random", "urandom", "tty")
_DEV_DIRS = ("pts", "shm")


def _bind(src: str, dst: str) -> None:
    subprocess.run(["mount", "--bind", src, dst], check=True)


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        sys.stderr.write("usage: nsexec.py ROOT -- CMD...\n")
        return 2
    root, cmd = os.path.abspath(argv[0]), argv[2:]
    dev = os.path.join(root, "dev")
    for name in _DEV_NODES:
        path = os.path.join(dev, name)
        if not os.path.exists(path):
            open(path, "a").close()
        _bind("/dev/" + name, path)
    for name in _DEV_DIRS:
        path = os.path.join(dev, name)
        os.makedirs(path, exist_ok=True)
        _bind("/dev/" + name, path)
    for i, name in enumerate(("stdin", "stdout", "stderr")):
        if not os.path.lexists(os.path.join(dev, name)):
            os.symlink(f"/proc/self/fd/{i}", os.path.join(dev, name))
    if not os.path.lexists(os.path.join(dev, "fd")):
        os.symlink("/proc/self/fd", os.path.join(dev, "fd"))
    _bind(os.path.join(root, "sys"), "/sys")
    _bind(dev, "/dev")
    if os.path.isdir("/etc/iscsi"):
        _bind(os.path.join(root, "etc", "iscsi"), "/etc/iscsi")
    os.execvp(cmd[0], cmd)
    return 127


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
