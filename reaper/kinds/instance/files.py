"""Executor step on instance files: rename to <uuid>_del, then remove, safely.

The guard chain follows kubelet's cleanupOrphanedPodDirs: never follow a
symlink, never leave instances_path, never cross into another filesystem, and
skip a tree while anything is mounted inside it. The checks run before the rename
and again on the renamed tree right before it is removed.
"""
from __future__ import annotations

import os
import shutil
import stat

from reaper import exception
from reaper.objects.step import StepResult


def _check(path: str, instances_path: str) -> os.stat_result:
    root = os.path.realpath(instances_path)
    parent = os.path.realpath(os.path.dirname(path.rstrip("/")))
    if parent != root:
        raise exception.UnsafePath(f"{path} is not directly under {root}")
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise exception.UnsafePath(f"{path} is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise exception.UnsafePath(f"{path} is not a directory")
    if st.st_dev != os.stat(root).st_dev:
        raise exception.UnsafePath(f"{path} is on another filesystem than {root}")
    return st


def _mounts_under(path: str) -> list[str]:
    prefix = os.path.realpath(path) + "/"
    try:
        with open("/proc/self/mounts") as f:
            points = [line.split()[1].encode().decode("unicode_escape") for line in f]
    except OSError:
        return []
    return [p for p in points if p.startswith(prefix) or p + "/" == prefix]


def _check_tree(path: str, dev: int) -> None:
    for dirpath, dirnames, _ in os.walk(path, followlinks=False):
        for name in dirnames:
            full = os.path.join(dirpath, name)
            st = os.lstat(full)
            if not stat.S_ISLNK(st.st_mode) and st.st_dev != dev:
                raise exception.UnsafePath(
                    f"{full} is another filesystem (mounted inside the tree)")


def delete_instance_dir(path: str, instances_path: str) -> StepResult:
    """Remove one instance directory; idempotent: a missing path is success."""
    path = path.rstrip("/")
    base = os.path.basename(path)
    uuid = base.split("_", 1)[0]
    target = os.path.join(os.path.dirname(path), uuid + "_del")
    if not os.path.lexists(path):
        if path != target and os.path.lexists(target):
            path = target       # crashed after the rename: finish the removal
        else:
            return StepResult.absent("already gone")
    if path != target:
        _check_one_filesystem(path, instances_path)
        if os.path.lexists(target):
            # A stale _del from an earlier interrupted delete: finish it first.
            _check_one_filesystem(target, instances_path)
            shutil.rmtree(target)
        os.rename(path, target)
    # Again right before removal, on the name that is removed: something may have
    # been mounted inside (or the tree swapped) since the checks above, or since the
    # rename of an earlier, interrupted attempt.
    _check_one_filesystem(target, instances_path)
    if not shutil.rmtree.avoids_symlink_attacks:     # pragma: no cover - Linux has it
        raise exception.UnsafePath("this platform's rmtree may follow symlinks")
    shutil.rmtree(target)
    return StepResult.done(f"removed {base}")


def _check_one_filesystem(path: str, instances_path: str) -> None:
    st = _check(path, instances_path)
    mounted = _mounts_under(path)
    if mounted:
        raise exception.UnsafePath(f"{path} has mounts inside: {mounted}")
    _check_tree(path, st.st_dev)
