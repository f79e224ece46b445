"""Collector of instance directories under ``instances_path``, and its filesystem type.

Read-only. Only names Nova itself creates are listed (``<uuid>``,
``<uuid>_resize``, ``<uuid>_del``); everything else there (``_base``, ``locks``,
``compute_nodes``, ``snapshots``, stray files, symlinks) is never reported, so
it can never become a finding.
"""
from __future__ import annotations

import os
import re
import stat

from oslo_log import log as logging

from reaper.objects.fields import DirKind
from reaper.objects.host import CollectorResult, InstanceDir

LOG = logging.getLogger(__name__)

_DIR_RE = re.compile(r"(?P<uuid>[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})"
                     r"(?P<suffix>_resize|_del)?")
_KINDS = {None: DirKind.INSTANCE, "_resize": DirKind.RESIZE, "_del": DirKind.DELETING}

# Filesystems whose contents other compute hosts see too: an evacuated instance's
# disks there are the destination's disks now. Anything in neither set is
# "unsure", and unsure keeps the disks.
SHARED_FS_TYPES = frozenset({
    "nfs", "nfs4", "cifs", "smb3", "glusterfs", "fuse.glusterfs", "ceph", "fuse.ceph",
    "fuse.ceph-fuse", "cephfs", "fuse.cephfs", "lustre", "gpfs", "ocfs2", "gfs2", "beegfs",
    "fuse.sshfs", "fuse.quobyte", "fuse.vstorage",
})
LOCAL_FS_TYPES = frozenset({
    "ext2", "ext3", "ext4", "xfs", "btrfs", "tmpfs", "zfs", "overlay", "f2fs", "jfs",
    "reiserfs",
})


def collect_instance_dirs(instances_path: str, sizes: bool = False) -> CollectorResult:
    """Nova's directories directly under ``instances_path``; never raises OSError.

    A missing or unreadable ``instances_path`` fails the collector instead of
    reporting "no directories": an unmounted shared filesystem looks exactly
    like an empty host, and must not turn every instance into an orphan.

    Walking every tree for its size costs more than the rest of the pass, and
    only the directories that end up in a finding need it: ``sizes=False``
    leaves ``size_bytes`` None, and the pass measures those with ``tree_size``.

    Paths are recorded under the real path of ``instances_path`` (symlinks, ``//``
    and ``..`` resolved), the one spelling the planner compares with the domains'
    resolved file paths and the executor deletes under.
    """
    root = os.path.realpath(instances_path)
    try:
        with os.scandir(root) as it:
            entries = list(it)
    except FileNotFoundError:
        return CollectorResult(kind="instance_dir", ok=False,
                               error=f"instances_path {instances_path} does not exist "
                                     f"(shared storage not mounted?)")
    except OSError as e:
        return CollectorResult(kind="instance_dir", ok=False,
                               error=f"cannot list instances_path {instances_path}: {e}")
    items = []
    for entry in sorted(entries, key=lambda e: e.name):
        m = _DIR_RE.fullmatch(entry.name)
        if not m or not entry.is_dir(follow_symlinks=False):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError:
            continue        # gone since the listing (renamed to _del, removed)
        items.append(InstanceDir(
            name=entry.name, uuid=m.group("uuid"), kind=_KINDS[m.group("suffix")],
            path=os.path.join(root, entry.name),
            size_bytes=_tree_size(entry.path, st.st_dev) if sizes else None,
            mtime=st.st_mtime))
    return CollectorResult(kind="instance_dir", ok=True, items=tuple(items))


def tree_size(path: str) -> int | None:
    """Size of one instance directory (see _tree_size); None if it is gone."""
    try:
        dev = os.lstat(path).st_dev
    except OSError:
        return None
    return _tree_size(path, dev)


def _tree_size(top: str, dev: int) -> int:
    """Bytes of the regular files under ``top``, as the reaper would delete them:
    symlinks are not followed and other filesystems mounted inside are not
    entered. Unreadable parts are left out (and logged), not fatal."""
    total, seen, todo = 0, set(), [top]
    while todo:
        path = todo.pop()
        try:
            with os.scandir(path) as it:
                for entry in it:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        if st.st_dev == dev:
                            todo.append(entry.path)
                    elif stat.S_ISREG(st.st_mode) and st.st_dev == dev:
                        if st.st_nlink > 1:         # count a hard-linked file once
                            if (st.st_dev, st.st_ino) in seen:
                                continue
                            seen.add((st.st_dev, st.st_ino))
                        total += st.st_size
        except OSError as e:
            LOG.warning("size of %s is partial: %s", top, e)
    return total


def _unescape_mount(field: str) -> str:
    """/proc/self/mounts writes space, tab, newline and backslash as octal escapes."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_type(path: str, mounts: str = "/proc/self/mounts") -> str | None:
    """Type of the filesystem holding ``path`` (``ext4``, ``nfs4``...), None if unknown.

    The longest mount point containing the resolved path wins; among mounts on
    the same point the last one listed, which is the one on top.
    """
    real = os.path.realpath(path)
    best, best_len = None, -1
    try:
        with open(mounts, encoding="utf-8", errors="surrogateescape") as f:
            for line in f:
                fields = line.split()
                if len(fields) < 3:
                    continue
                point = _unescape_mount(fields[1])
                inside = point == "/" or real == point or real.startswith(point + "/")
                if inside and len(point) >= best_len:
                    best, best_len = fields[2], len(point)
    except OSError as e:
        LOG.warning("cannot read %s: %s", mounts, e)
        return None
    return best
