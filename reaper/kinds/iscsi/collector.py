"""Collector of iSCSI sessions, node records and the SCSI devices behind them.

Read-only, and it reads what os-brick reads, the way it reads it:

* ``iscsiadm -m session`` (``tcp: [sid] ip:port,tpgt iqn (non-flash)``) and
  ``iscsiadm -m node`` (``ip:port,tpgt iqn``); exit code 21 means "none". The two
  commands run concurrently, while sysfs is walked.
* sysfs: ``/sys/class/scsi_host/host*/device/session<sid>/target*/H:C:T:L/block/<dev>``
  (os-brick's own path), with each device's ``state``, ``wwid``, ``dev``, its
  partitions (``/sys/block/sdX/sdXN``) and what is stacked on the disk or on a
  partition (``holders``: multipath, dm-crypt, LVM, md), followed to any depth, with
  their ``dm/name``, ``dm/uuid``, ``slaves``, ``holders`` and partitions.
* ``/dev/disk/by-*`` (by-path, by-id, by-uuid, ``-partN``...), ``/dev/mapper``,
  ``/dev/md`` and the LVM volume group directories, for every /dev path leading to
  one of those devices, so a domain's disk source can be matched to its LUN.
* in use: open by any process (``/proc/*/fd``, compared by device number, or by
  inode for the test simulator's regular files), mounted (``mountinfo``, by device
  number, with the mount points: the root among them) or swap (``/proc/swaps``).
* the boot firmware's targets: ``/sys/firmware/ibft`` and ``/sys/firmware/iscsi_boot*``.

The CHAP credentials sysfs exposes (``iscsi_session/*/password``) are never read.
A failure of iscsiadm or of the sysfs walk makes the whole kind unavailable
(``ok=False``) so the guards block every iSCSI action of the pass.
"""
from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess

from oslo_log import log as logging

from reaper import exception
from reaper.conf import CONF
from reaper.kinds.iscsi.objects import (
    BlockPartition,
    DmMap,
    IscsiBootTarget,
    IscsiNode,
    IscsiSession,
    ScsiDevice,
)
from reaper.objects.host import CollectorResult

LOG = logging.getLogger(__name__)

KIND = "iscsi_session"


NO_RECORDS = 21         # ISCSI_ERR_NO_OBJS_FOUND
_HCTL_RE = re.compile(r"^(\d+):(\d+):(\d+):(\d+)$")
_SESSION_RE = re.compile(r"^(\S+):\s+\[(\d+)\]\s+(\S+),(-?\d+)\s+(\S+)(?:\s+\((\S+)\))?\s*$")
_NODE_RE = re.compile(r"^(\S+),(-?\d+)\s+(\S+)\s*$")


# --------------------------------------------------------------------------
# iscsiadm output
# --------------------------------------------------------------------------

def parse_sessions(out: str) -> list[tuple[str, str, str, str, str, str]]:
    """``iscsiadm -m session`` -> [(transport, sid, portal, tpgt, iqn, node_type)].

    The format os-brick's ``_get_iscsi_sessions_full`` parses; lines that are not
    session lines (debug noise) are skipped.
    """
    rows = []
    for line in out.splitlines():
        m = _SESSION_RE.match(line.strip())
        if m:
            rows.append((m.group(1), m.group(2), m.group(3), m.group(4), m.group(5),
                         m.group(6) or "non-flash"))
        elif line.strip():
            LOG.debug("iscsiadm -m session: skipping %r", line)
    return rows


def parse_nodes(out: str) -> list[tuple[str, str, str]]:
    """``iscsiadm -m node`` -> [(portal, tpgt, iqn)] (os-brick's ``_get_iscsi_nodes``)."""
    rows = []
    for line in out.splitlines():
        m = _NODE_RE.match(line.strip())
        if m:
            rows.append((m.group(1), m.group(2), m.group(3)))
    return rows


def _start(cmd: list[str], env) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, close_fds=True)


def _finish(proc: subprocess.Popen, what: str, timeout: int) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        proc.kill()
        proc.communicate()
        raise exception.CollectError(f"{what} timed out after {timeout}s") from e
    if proc.returncode == NO_RECORDS:
        return ""
    if proc.returncode != 0:
        raise exception.CollectError(f"{what} exited {proc.returncode}: {err.strip()[:300]}")
    return out


# --------------------------------------------------------------------------
# sysfs and /dev
# --------------------------------------------------------------------------

_READ_SIZE = 65536


def _read(path: str) -> str | None:
    """A sysfs attribute's text, stripped; None when it cannot be read. Plain
    ``os.open``/``os.read`` (a pass reads thousands: a text file object costs about
    three times as much), read to the end: a read shorter than asked for is the end
    (a sysfs attribute is at most a page, and the kernel hands it whole to a read
    that asks for as much; a regular file reads short only at its end), which saves
    the second ``read`` per attribute that would only return b"" (3,000 a pass on
    the busy-host benchmark)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            chunk = os.read(fd, _READ_SIZE)
            chunks.append(chunk)
            if len(chunk) < _READ_SIZE:
                break
    except OSError:
        return None
    finally:
        os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace").strip()


def _listdir(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except (FileNotFoundError, NotADirectoryError):
        return []


def walk_sessions(sysfs_root: str) -> dict[str, list[tuple[str, int, str, str]]]:
    """{sid: [(hctl, lun, device name, lun dir)]}: os-brick's glob, as one walk."""
    by_sid: dict[str, list] = {}
    hosts = os.path.join(sysfs_root, "class", "scsi_host")
    for host in _listdir(hosts):
        if not host.startswith("host"):
            continue
        hdev = os.path.join(hosts, host, "device")
        for sess in _listdir(hdev):
            if not sess.startswith("session"):
                continue
            sid = sess[len("session"):]
            luns = by_sid.setdefault(sid, [])
            sdir = os.path.join(hdev, sess)
            for tgt in _listdir(sdir):
                if not tgt.startswith("target"):
                    continue
                tdir = os.path.join(sdir, tgt)
                for hctl in _listdir(tdir):
                    m = _HCTL_RE.match(hctl)
                    if not m:
                        continue
                    ldir = os.path.join(tdir, hctl)
                    for name in _listdir(os.path.join(ldir, "block")):
                        luns.append((hctl, int(m.group(4)), name, ldir))
    return by_sid


_DEV_LINK_DIRS = ("mapper", "md")
_LVM_NAME_RE = re.compile(r"^((?:[^-]|--)+)-((?:[^-]|--)+)$")


def _dev_links(dev_root: str, wanted: set[str], lvm_names: list[str] = ()) -> dict[str, list[str]]:
    """{device name: [/dev paths of symlinks pointing at it]} for the devices in
    ``wanted``: every /dev/disk/by-* directory (by-path, by-id, by-uuid, by-partuuid,
    by-label...), /dev/mapper, /dev/md and the LVM volume group directories of the
    ``lvm_names`` maps (``/dev/<vg>/<lv>``)."""
    dirs = [f"disk/{sub}" for sub in sorted(_listdir(os.path.join(dev_root, "disk")))]
    dirs += list(_DEV_LINK_DIRS)
    for dm_name in lvm_names:
        m = _LVM_NAME_RE.match(dm_name)
        if m:
            dirs.append(m.group(1).replace("--", "-"))
    links: dict[str, list[str]] = {}
    for sub in dict.fromkeys(dirs):
        d = os.path.join(dev_root, sub)
        for entry in _listdir(d):
            try:
                target = os.readlink(os.path.join(d, entry))
            except OSError:
                continue
            name = os.path.basename(target)
            if name in wanted:
                links.setdefault(name, []).append(f"/dev/{sub}/{entry}")
    return links


def _identity(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if stat.S_ISBLK(st.st_mode):
        return ("b", st.st_rdev)
    return ("f", st.st_dev, st.st_ino)


def _open_by(proc_root: str, dev_root: str, wanted: dict[tuple, str]) -> dict[str, set[int]]:
    """{device name: pids holding it open}; ``wanted`` maps identities to names."""
    found: dict[str, set[int]] = {}
    if not wanted:
        return found
    for pid in _listdir(proc_root):
        if not pid.isdigit():
            continue
        fd_dir = os.path.join(proc_root, pid, "fd")
        for fd in _listdir(fd_dir):
            p = os.path.join(fd_dir, fd)
            try:
                target = os.readlink(p)
            except OSError:
                continue
            if "/dev/" not in target and not target.startswith(dev_root):
                continue
            ident = _identity(p)
            name = wanted.get(ident) if ident else None
            if name:
                found.setdefault(name, set()).add(int(pid))
    return found


def _unescape(field: str) -> str:
    """mountinfo and /proc/swaps escape space, tab, newline and backslash as \\ooo."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def _mounts(proc_root: str) -> dict[str, list[str]]:
    """{"major:minor": [mount points]} from our mountinfo (the root fs included)."""
    out: dict[str, list[str]] = {}
    try:
        with open(os.path.join(proc_root, "self", "mountinfo")) as f:
            for line in f:
                parts = line.split()
                if len(parts) > 4:
                    out.setdefault(parts[2], []).append(_unescape(parts[4]))
    except OSError:
        pass
    return out


def _swaps(proc_root: str) -> set[str]:
    """Device numbers ("major:minor") of the block devices in /proc/swaps."""
    out = set()
    try:
        with open(os.path.join(proc_root, "swaps")) as f:
            lines = f.read().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        parts = line.split()
        if len(parts) < 2 or parts[1] != "partition":
            continue
        try:
            st = os.stat(_unescape(parts[0]))
        except OSError:
            continue
        if stat.S_ISBLK(st.st_mode):
            out.add(f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
    return out


def boot_targets(sysfs_root: str) -> list[tuple[str, str, str]]:
    """[(portal, iqn, source)] of the boot firmware tables: the iBFT
    (``firmware/ibft/target*``, iscsi_ibft.c) and the offload drivers' iscsi_boot
    tables (``firmware/iscsi_boot*/target*``: be2iscsi, qla4xxx, qedi, bnx2i)."""
    fw = os.path.join(sysfs_root, "firmware")
    bases = ["ibft"] + sorted(e for e in _listdir(fw) if e.startswith("iscsi_boot"))
    out = []
    for base in bases:
        bdir = os.path.join(fw, base)
        for tgt in sorted(_listdir(bdir)):
            if not tgt.startswith("target"):
                continue
            tdir = os.path.join(bdir, tgt)
            iqn, addr = _read(os.path.join(tdir, "target-name")), \
                _read(os.path.join(tdir, "ip-addr"))
            port = _read(os.path.join(tdir, "port")) or "3260"
            if not iqn or not addr:
                continue
            portal = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
            out.append((portal, iqn, base))
    return out


class _Stack:
    """The block devices above the iSCSI disks, from sysfs: partitions (subdirectories
    with a ``partition`` file) and holders (``holders/``), followed to any depth."""

    def __init__(self, sysfs_root: str):
        self.sysfs_root = sysfs_root
        self.parts: dict[str, dict] = {}    # partition name -> facts
        self.stacked: dict[str, dict] = {}  # dm/md/... name -> facts

    @staticmethod
    def partitions_of(ndir: str, name: str) -> list[str]:
        return sorted(e for e in _listdir(ndir)
                      if e.startswith(name) and e != name
                      and os.path.exists(os.path.join(ndir, e, "partition")))

    def follow(self, ndir: str, name: str) -> tuple[list[str], list[str]]:
        """(holders, partitions) of the device at ``ndir``; records what is above it."""
        holders = sorted(_listdir(os.path.join(ndir, "holders")))
        parts = self.partitions_of(ndir, name)
        for p in parts:
            if p in self.parts:
                continue
            pdir = os.path.join(ndir, p)
            p_holders = sorted(_listdir(os.path.join(pdir, "holders")))
            self.parts[p] = {"disk": name, "dev": _read(os.path.join(pdir, "dev")),
                             "holders": p_holders}
            for h in p_holders:
                self._stacked(h)
        for h in holders:
            self._stacked(h)
        return holders, parts

    def _stacked(self, name: str) -> None:
        if name in self.stacked:
            return
        d = os.path.join(self.sysfs_root, "block", name)
        facts = {"kind": "unknown", "dm_name": None, "uuid": None, "holders": [],
                 "partitions": [], "slaves": sorted(_listdir(os.path.join(d, "slaves"))),
                 "dev": _read(os.path.join(d, "dev"))}
        self.stacked[name] = facts
        if os.path.isdir(os.path.join(d, "dm")):
            facts.update(kind="dm", dm_name=_read(os.path.join(d, "dm", "name")),
                         uuid=_read(os.path.join(d, "dm", "uuid")))
        elif os.path.isdir(os.path.join(d, "md")):
            facts["kind"] = "md"
        if os.path.isdir(d):
            facts["holders"], facts["partitions"] = self.follow(d, name)


# --------------------------------------------------------------------------
# The collector
# --------------------------------------------------------------------------

def collect(sysfs_root: str = "/sys", dev_root: str = "/dev", iscsiadm: str = "iscsiadm",
            proc_root: str = "/proc", env: dict | None = None,
            timeout: int = 60) -> CollectorResult:
    """Everything iSCSI on this host; ``ok=False`` (never an exception) on failure."""
    try:
        return CollectorResult(KIND, True, tuple(_collect(sysfs_root, dev_root, iscsiadm,
                                                          proc_root, env, timeout)))
    except (exception.CollectError, OSError) as e:
        LOG.error("iSCSI collector failed: %s", e)
        return CollectorResult(KIND, False, error=str(e))


def collect_from_conf(conf=CONF, env: dict | None = None) -> CollectorResult:
    c = conf.iscsi
    return collect(c.sysfs_root, c.dev_root, c.iscsiadm, env=env, timeout=c.iscsiadm_timeout)


def _collect(sysfs_root, dev_root, iscsiadm, proc_root, env, timeout) -> list:
    path = (env or os.environ).get("PATH")
    if shutil.which(iscsiadm, path=path) is None:
        if _listdir(os.path.join(sysfs_root, "class", "iscsi_session")):
            raise exception.CollectError(f"iSCSI sessions exist but {iscsiadm!r} is not installed")
        return []       # no open-iscsi and no session: nothing iSCSI on this host
    procs = [_start([iscsiadm, "-m", "session"], env), _start([iscsiadm, "-m", "node"], env)]
    try:
        by_sid = walk_sessions(sysfs_root)
        stack = _Stack(sysfs_root)
        devices: dict[str, dict] = {}
        for sid, luns in by_sid.items():
            for hctl, lun, name, ldir in luns:
                blk = os.path.join(sysfs_root, "block", name)
                holders, parts = stack.follow(blk, name)
                devices[name] = {"sid": sid, "hctl": hctl, "lun": lun,
                                 "state": _read(os.path.join(ldir, "state")),
                                 "wwid": _read(os.path.join(ldir, "wwid")),
                                 "dev": _read(os.path.join(blk, "dev")), "holders": holders,
                                 "partitions": parts}
        everything = {**devices, **stack.parts, **stack.stacked}
        lvm = [f["dm_name"] for f in stack.stacked.values()
               if f["dm_name"] and (f["uuid"] or "").startswith("LVM-")]
        links = _dev_links(dev_root, set(everything), lvm)
        mounts = _mounts(proc_root)
        swaps = _swaps(proc_root) if everything else set()
        wanted = {}
        for name in everything:
            ident = _identity(os.path.join(dev_root, name))
            if ident:
                wanted[ident] = name
        opened = _open_by(proc_root, dev_root, wanted)
        boot = boot_targets(sysfs_root)
        out_session = _finish(procs[0], "iscsiadm -m session", timeout)
        out_node = _finish(procs[1], "iscsiadm -m node", timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()

    def paths(name: str) -> tuple[str, ...]:
        return (f"/dev/{name}", *sorted(links.get(name, ())))

    def use(name: str, dev: str | None) -> dict:
        mps = tuple(mounts.get(dev, ())) if dev else ()
        return {"paths": paths(name), "open_pids": tuple(sorted(opened.get(name, ()))),
                "mountpoints": mps, "swap": bool(dev and dev in swaps)}

    items: list = []
    for transport, sid, portal, tpgt, iqn, node_type in parse_sessions(out_session):
        devs = []
        host_no = None
        for hctl, lun, name, _ in sorted(by_sid.get(sid, ()), key=lambda x: x[1]):
            d = devices[name]
            host_no = int(hctl.split(":", 1)[0])
            u = use(name, d["dev"])
            devs.append(ScsiDevice(
                name=name, hctl=hctl, lun=lun, state=d["state"], wwid=d["wwid"], dev=d["dev"],
                holders=tuple(d["holders"]), mounted=bool(u["mountpoints"]),
                partitions=tuple(d["partitions"]), **u))
        items.append(IscsiSession(transport=transport, sid=sid, portal=portal, tpgt=tpgt,
                                  iqn=iqn, host_no=host_no, devices=tuple(devs),
                                  node_type=node_type))
    for portal, tpgt, iqn in parse_nodes(out_node):
        items.append(IscsiNode(portal=portal, tpgt=tpgt, iqn=iqn))
    for name, p in sorted(stack.parts.items()):
        items.append(BlockPartition(name=name, disk=p["disk"], dev=p["dev"],
                                    holders=tuple(p["holders"]), **use(name, p["dev"])))
    for dm, d in sorted(stack.stacked.items()):
        u = use(dm, d["dev"])
        items.append(DmMap(name=dm, dm_name=d["dm_name"], uuid=d["uuid"],
                           slaves=tuple(d["slaves"]), holders=tuple(d["holders"]),
                           mounted=bool(u["mountpoints"]), kind=d["kind"], dev=d["dev"],
                           partitions=tuple(d["partitions"]), **u))
    for portal, iqn, source in boot:
        items.append(IscsiBootTarget(portal=portal, iqn=iqn, source=source))
    return items


def bare_walk(sysfs_root: str = "/sys", iscsiadm: str = "iscsiadm",
              env: dict | None = None) -> dict[str, list[str]]:
    """The benchmark's baseline: ``iscsiadm -m session`` then the sysfs walk, nothing else."""
    proc = _start([iscsiadm, "-m", "session"], env)
    out = _finish(proc, "iscsiadm -m session", 60)
    by_sid = walk_sessions(sysfs_root)
    return {sid: [name for _, _, name, _ in by_sid.get(sid, ())]
            for _, sid, _, _, _, _ in parse_sessions(out)}
