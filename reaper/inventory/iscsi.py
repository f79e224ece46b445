"""Collector of iSCSI sessions, node records and the SCSI devices behind them.

Read-only, and it reads what os-brick reads, the way it reads it:

* ``iscsiadm -m session`` (``tcp: [sid] ip:port,tpgt iqn (non-flash)``) and
  ``iscsiadm -m node`` (``ip:port,tpgt iqn``); exit code 21 means "none". The two
  commands run concurrently, while sysfs is walked.
* sysfs: ``/sys/class/scsi_host/host*/device/session<sid>/target*/H:C:T:L/block/<dev>``
  (os-brick's own path), with each device's ``state``, ``wwid``, ``dev`` and
  ``holders`` (device-mapper maps: multipath or dm-crypt) and, for those maps, their
  ``dm/name``, ``dm/uuid``, ``slaves`` and ``holders``.
* ``/dev/disk/by-path``, ``/dev/disk/by-id`` and ``/dev/mapper`` for every /dev path
  leading to a device, so a domain's disk source can be matched to it.
* in use: open by any process (``/proc/*/fd``, compared by device number, or by
  inode for the test simulator's regular files) or mounted (``mountinfo``).

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

from oslo_config import cfg
from oslo_log import log as logging

from reaper.records import CollectorResult, DmMap, IscsiNode, IscsiSession, ScsiDevice

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

KIND = "iscsi_session"

iscsi_opts = [
    cfg.StrOpt("sysfs_root", default="/sys",
               help="Where sysfs is mounted (the iSCSI collector reads scsi_host, block "
                    "and device-mapper entries under it). Changed only for tests."),
    cfg.StrOpt("dev_root", default="/dev",
               help="Where /dev is (disk/by-path, disk/by-id, mapper). Changed only for "
                    "tests."),
    cfg.StrOpt("iscsiadm", default="iscsiadm",
               help="The iscsiadm command, looked up in PATH like os-brick does."),
    cfg.IntOpt("iscsiadm_timeout", default=60, min=1,
               help="Seconds before an iscsiadm listing counts as failed."),
]
CONF.register_opts(iscsi_opts, group="iscsi")

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


class CollectError(Exception):
    pass


def _start(cmd: list[str], env) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env, close_fds=True)


def _finish(proc: subprocess.Popen, what: str, timeout: int) -> str:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as e:
        proc.kill()
        proc.communicate()
        raise CollectError(f"{what} timed out after {timeout}s") from e
    if proc.returncode == NO_RECORDS:
        return ""
    if proc.returncode != 0:
        raise CollectError(f"{what} exited {proc.returncode}: {err.strip()[:300]}")
    return out


# --------------------------------------------------------------------------
# sysfs and /dev
# --------------------------------------------------------------------------

def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


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


def _dev_links(dev_root: str) -> dict[str, list[str]]:
    """{device name: [/dev/disk/by-*/... and /dev/mapper/... paths pointing at it]}."""
    links: dict[str, list[str]] = {}
    for sub in ("disk/by-path", "disk/by-id", "mapper"):
        d = os.path.join(dev_root, sub)
        for entry in _listdir(d):
            try:
                target = os.readlink(os.path.join(d, entry))
            except OSError:
                continue
            links.setdefault(os.path.basename(target), []).append(f"/dev/{sub}/{entry}")
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


def _mounted(proc_root: str) -> set[str]:
    out = set()
    try:
        with open(os.path.join(proc_root, "self", "mountinfo")) as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2:
                    out.add(parts[2])
    except OSError:
        pass
    return out


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
    except (CollectError, OSError) as e:
        LOG.error("iSCSI collector failed: %s", e)
        return CollectorResult(KIND, False, error=str(e))


def collect_from_conf(conf=CONF, env: dict | None = None) -> CollectorResult:
    c = conf.iscsi
    return collect(c.sysfs_root, c.dev_root, c.iscsiadm, env=env, timeout=c.iscsiadm_timeout)


def _collect(sysfs_root, dev_root, iscsiadm, proc_root, env, timeout) -> list:
    path = (env or os.environ).get("PATH")
    if shutil.which(iscsiadm, path=path) is None:
        if _listdir(os.path.join(sysfs_root, "class", "iscsi_session")):
            raise CollectError(f"iSCSI sessions exist but {iscsiadm!r} is not installed")
        return []       # no open-iscsi and no session: nothing iSCSI on this host
    procs = [_start([iscsiadm, "-m", "session"], env), _start([iscsiadm, "-m", "node"], env)]
    try:
        by_sid = walk_sessions(sysfs_root)
        links = _dev_links(dev_root)
        mounted = _mounted(proc_root)
        devices: dict[str, dict] = {}
        holders_of: dict[str, list[str]] = {}
        for sid, luns in by_sid.items():
            for hctl, lun, name, ldir in luns:
                blk = os.path.join(sysfs_root, "block", name)
                holders = sorted(_listdir(os.path.join(blk, "holders")))
                devices[name] = {"sid": sid, "hctl": hctl, "lun": lun,
                                 "state": _read(os.path.join(ldir, "state")),
                                 "wwid": _read(os.path.join(ldir, "wwid")),
                                 "dev": _read(os.path.join(blk, "dev")), "holders": holders}
                for h in holders:
                    holders_of.setdefault(h, []).append(name)
        dms: dict[str, dict] = {}
        for dm in holders_of:
            d = os.path.join(sysfs_root, "block", dm)
            dms[dm] = {"dm_name": _read(os.path.join(d, "dm", "name")),
                       "uuid": _read(os.path.join(d, "dm", "uuid")),
                       "slaves": sorted(_listdir(os.path.join(d, "slaves"))),
                       "holders": sorted(_listdir(os.path.join(d, "holders"))),
                       "dev": _read(os.path.join(d, "dev"))}
        wanted = {}
        for name in (*devices, *dms):
            ident = _identity(os.path.join(dev_root, name))
            if ident:
                wanted[ident] = name
        opened = _open_by(proc_root, dev_root, wanted)
        out_session = _finish(procs[0], "iscsiadm -m session", timeout)
        out_node = _finish(procs[1], "iscsiadm -m node", timeout)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()

    def paths(name: str) -> tuple[str, ...]:
        return (f"/dev/{name}", *sorted(links.get(name, ())))

    items: list = []
    for transport, sid, portal, tpgt, iqn, node_type in parse_sessions(out_session):
        devs = []
        host_no = None
        for hctl, lun, name, _ in sorted(by_sid.get(sid, ()), key=lambda x: x[1]):
            d = devices[name]
            host_no = int(hctl.split(":", 1)[0])
            devs.append(ScsiDevice(
                name=name, hctl=hctl, lun=lun, state=d["state"], wwid=d["wwid"], dev=d["dev"],
                paths=paths(name), holders=tuple(d["holders"]),
                open_pids=tuple(sorted(opened.get(name, ()))),
                mounted=bool(d["dev"] and d["dev"] in mounted)))
        items.append(IscsiSession(transport=transport, sid=sid, portal=portal, tpgt=tpgt,
                                  iqn=iqn, host_no=host_no, devices=tuple(devs),
                                  node_type=node_type))
    for portal, tpgt, iqn in parse_nodes(out_node):
        items.append(IscsiNode(portal=portal, tpgt=tpgt, iqn=iqn))
    for dm, d in sorted(dms.items()):
        items.append(DmMap(name=dm, dm_name=d["dm_name"], uuid=d["uuid"],
                           slaves=tuple(d["slaves"]), holders=tuple(d["holders"]),
                           paths=paths(dm), open_pids=tuple(sorted(opened.get(dm, ()))),
                           mounted=bool(d["dev"] and d["dev"] in mounted)))
    return items


def bare_walk(sysfs_root: str = "/sys", iscsiadm: str = "iscsiadm",
              env: dict | None = None) -> dict[str, list[str]]:
    """The benchmark's baseline: ``iscsiadm -m session`` then the sysfs walk, nothing else."""
    proc = _start([iscsiadm, "-m", "session"], env)
    out = _finish(proc, "iscsiadm -m session", 60)
    by_sid = walk_sessions(sysfs_root)
    return {sid: [name for _, _, name, _ in by_sid.get(sid, ())]
            for _, sid, _, _, _, _ in parse_sessions(out)}
