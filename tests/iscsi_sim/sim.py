"""A small simulator of a Linux iSCSI initiator: open-iscsi 2.1.8's ``iscsiadm``,
the kernel's iscsi_tcp/SCSI sysfs and udev's /dev links, kept in one directory.

Why it exists: test hosts (containers, CI runners) cannot be counted on to load the
``iscsi_tcp`` kernel module or to reach an iSCSI target, so no real initiator session
can be logged in (not even discovery works without the module).
Everything above that boundary is real: os-brick, the reaper, libvirt, the Nova DB.
The simulator stands only for the kernel + iscsid + iscsiadm, and aims to be
faithful where the reaper and os-brick look:

* ``iscsiadm`` prints exactly what open-iscsi 2.1.8 prints for ``-m session``
  (flat and ``-P 1/2/3``), ``-m node`` (flat, ``-P 1``, record show),
  ``-m discoverydb -o show -P 1``, ``--op new/update/delete``, ``--login``,
  ``--logout``, ``-m discovery -t sendtargets``, with its real exit codes
  (21 no records / no sessions, 15 session exists, 7 invalid parameter...) and
  its messages on stderr prefixed "iscsiadm: " (formats taken from open-iscsi
  2.1.8's sources and from the real binary's node-database commands on this host).
* the sysfs tree is the kernel's layout (``/sys/devices/platform/hostH/sessionS/
  targetH:0:0/H:0:0:L/block/sdX``, the ``scsi_host``, ``iscsi_host``,
  ``iscsi_session``, ``iscsi_connection`` and ``block`` classes, relative
  symlinks), ``/dev/disk/by-path/ip-<portal>-iscsi-<iqn>-lun-<L>`` and
  ``/dev/disk/by-id/scsi-<wwid>`` links point at ``../../sdX``, and sd names
  are reused lowest-first like the kernel's ida.
* writing ``1`` to ``/sys/block/sdX/device/delete`` removes the device (and its
  udev links); writing ``C T L`` to ``/sys/class/scsi_host/hostH/scan`` adds LUNs:
  the ``tee`` shim in ``bin/`` plays the kernel for those writes (os-brick
  issues them through ``tee -a``), ``blockdev --flushbufs`` is answered by the
  ``blockdev`` shim for simulated devices. Every other invocation of tee and
  blockdev is passed to the real programs.

The state lives under one root R (``ISCSI_SIM_ROOT``): ``R/sys``, ``R/dev``,
``R/etc/iscsi`` (open-iscsi's node database layout and record format) and
``R/sim`` (the storage array's targets, counters, and a log of every command).
Block devices are regular files. /dev/sdX opened by a process is "in use".

The executables in ``bin/`` run with ``python3 -S`` and import only the standard
library, so they start fast and work inside a mount namespace where /sys and /dev
are bind mounts of R/sys and R/dev (see ``nsexec.py``): that is how os-brick,
whose sysfs and /dev paths are fixed, sees the simulated host.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import stat
import sys
import time

VERSION = "2.1.8"
TRANSPORT_CLASS_VERSION = "2.0-870"
DEFAULT_PORT = 3260
INITIATOR = "iqn.1993-08.org.debian:01:reaper-sim"

# exit codes (open-iscsi include/iscsi_err.h)
ERR_SESS_NOT_FOUND = 2
ERR_TRANS = 4
ERR_INVAL = 7
ERR_TRANS_TIMEOUT = 8
ERR_ISCSID_NOTCONN = 20
ERR_SESS_EXISTS = 15
ERR_NO_OBJS_FOUND = 21
ERR_SYSFS_LOOKUP = 22

# The record ``iscsiadm -m node -T .. -p ..`` prints, as open-iscsi 2.1.8 on this host
# printed it after ``--op new``; {placeholders} are filled per record.
NODE_TEMPLATE = """node.name = {name}
node.tpgt = {tpgt}
node.startup = manual
node.leading_login = No
iface.iscsi_ifacename = {iface}
iface.net_ifacename = <empty>
iface.ipaddress = <empty>
iface.prefix_len = 0
iface.hwaddress = <empty>
iface.transport_name = tcp
iface.initiatorname = <empty>
iface.state = <empty>
iface.vlan_id = 0
iface.vlan_priority = 0
iface.vlan_state = <empty>
iface.iface_num = 0
iface.mtu = 0
iface.port = 0
iface.bootproto = <empty>
iface.subnet_mask = <empty>
iface.gateway = <empty>
iface.dhcp_alt_client_id_state = <empty>
iface.dhcp_alt_client_id = <empty>
iface.dhcp_dns = <empty>
iface.dhcp_learn_iqn = <empty>
iface.dhcp_req_vendor_id_state = <empty>
iface.dhcp_vendor_id_state = <empty>
iface.dhcp_vendor_id = <empty>
iface.dhcp_slp_da = <empty>
iface.fragmentation = <empty>
iface.gratuitous_arp = <empty>
iface.incoming_forwarding = <empty>
iface.tos_state = <empty>
iface.tos = 0
iface.ttl = 0
iface.delayed_ack = <empty>
iface.tcp_nagle = <empty>
iface.tcp_wsf_state = <empty>
iface.tcp_wsf = 0
iface.tcp_timer_scale = 0
iface.tcp_timestamp = <empty>
iface.redirect = <empty>
iface.def_task_mgmt_timeout = 0
iface.header_digest = <empty>
iface.data_digest = <empty>
iface.immediate_data = <empty>
iface.initial_r2t = <empty>
iface.data_seq_inorder = <empty>
iface.data_pdu_inorder = <empty>
iface.erl = 0
iface.max_receive_data_len = 0
iface.first_burst_len = 0
iface.max_outstanding_r2t = 0
iface.max_burst_len = 0
iface.chap_auth = <empty>
iface.bidi_chap = <empty>
iface.strict_login_compliance = <empty>
iface.discovery_auth = <empty>
iface.discovery_logout = <empty>
node.discovery_address = {disc_address}
node.discovery_port = {disc_port}
node.discovery_type = {disc_type}
node.session.initial_cmdsn = 0
node.session.initial_login_retry_max = 4
node.session.xmit_thread_priority = -20
node.session.cmds_max = 128
node.session.queue_depth = 32
node.session.nr_sessions = 1
node.session.auth.authmethod = None
node.session.auth.username = <empty>
node.session.auth.password = <empty>
node.session.auth.username_in = <empty>
node.session.auth.password_in = <empty>
node.session.auth.chap_algs = MD5
node.session.timeo.replacement_timeout = 120
node.session.err_timeo.abort_timeout = 15
node.session.err_timeo.lu_reset_timeout = 30
node.session.err_timeo.tgt_reset_timeout = 30
node.session.err_timeo.host_reset_timeout = 60
node.session.iscsi.FastAbort = Yes
node.session.iscsi.InitialR2T = No
node.session.iscsi.ImmediateData = Yes
node.session.iscsi.FirstBurstLength = 262144
node.session.iscsi.MaxBurstLength = 16776192
node.session.iscsi.DefaultTime2Retain = 0
node.session.iscsi.DefaultTime2Wait = 2
node.session.iscsi.MaxConnections = 1
node.session.iscsi.MaxOutstandingR2T = 1
node.session.iscsi.ERL = 0
node.session.scan = auto
node.session.reopen_max = 0
node.conn[0].address = {address}
node.conn[0].port = {port}
node.conn[0].startup = manual
node.conn[0].tcp.window_size = 524288
node.conn[0].tcp.type_of_service = 0
node.conn[0].timeo.logout_timeout = 15
node.conn[0].timeo.login_timeout = 30
node.conn[0].timeo.auth_timeout = 45
node.conn[0].timeo.noop_out_interval = 5
node.conn[0].timeo.noop_out_timeout = 5
node.conn[0].iscsi.MaxXmitDataSegmentLength = 0
node.conn[0].iscsi.MaxRecvDataSegmentLength = 262144
node.conn[0].iscsi.HeaderDigest = None
node.conn[0].iscsi.DataDigest = None
node.conn[0].iscsi.IFMarker = No
node.conn[0].iscsi.OFMarker = No
"""
_PASSWORD_KEYS = ("node.session.auth.password", "node.session.auth.password_in")


class SimError(Exception):
    """An iscsiadm failure: message (without the "iscsiadm: " prefix) and exit code."""

    def __init__(self, msg: str, rc: int):
        super().__init__(msg)
        self.rc = rc


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def split_portal(portal: str) -> tuple[str, int, int | None]:
    """"ip[:port][,tpgt]" or "[v6][:port][,tpgt]" -> (address, port, tpgt)."""
    tpgt = None
    if "," in portal:
        portal, t = portal.rsplit(",", 1)
        tpgt = int(t)
    if portal.startswith("["):
        addr, _, rest = portal[1:].partition("]")
        port = int(rest[1:]) if rest.startswith(":") and rest[1:] else DEFAULT_PORT
        return addr, port, tpgt
    if portal.count(":") == 1:
        addr, port = portal.split(":")
        return addr, int(port or DEFAULT_PORT), tpgt
    return portal, DEFAULT_PORT, tpgt


def join_portal(addr: str, port: int) -> str:
    return f"{addr}:{port}" if "." in addr or ":" not in addr else f"[{addr}]:{port}"


def sd_name(index: int) -> str:
    """The kernel's sd_format_disk_name: 0 -> sda, 25 -> sdz, 26 -> sdaa."""
    name = ""
    index += 1
    while index:
        index, rem = divmod(index - 1, 26)
        name = chr(ord("a") + rem) + name
    return "sd" + name


_SD_MAJORS = (8, 65, 66, 67, 68, 69, 70, 71, 128, 129, 130, 131, 132, 133, 134, 135)


def sd_devt(index: int, part: int = 0) -> str:
    """The kernel's sd device number ("major:minor") of disk ``index``, partition
    ``part`` (sd.c: 16 minors a disk, majors 8, 65-71, 128-135)."""
    major = _SD_MAJORS[(index & 0xF0) >> 4]
    minor = ((index & 0xF) << 4) | (index & 0xFFF00)
    return f"{major}:{minor + part}"


def sd_index(name: str) -> int:
    n = 0
    for ch in name[2:]:
        n = n * 26 + (ord(ch) - ord("a") + 1)
    return n - 1


def _write(path: str, content: str = "") -> None:
    with open(path, "w") as f:
        f.write(content)


def _read(path: str, default: str | None = None) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def _symlink(target: str, link: str) -> None:
    """A relative symlink at ``link`` to the absolute path ``target`` (same root)."""
    os.makedirs(os.path.dirname(link), exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(link)
    os.symlink(os.path.relpath(target, os.path.dirname(link)), link)


def _unlink(path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# --------------------------------------------------------------------------
# The simulated host
# --------------------------------------------------------------------------

class SimHost:
    """The simulated initiator host under ``root``; also the tests' builder API."""

    def __init__(self, root: str):
        self.root = os.path.abspath(root)
        self.sys = os.path.join(self.root, "sys")
        self.dev = os.path.join(self.root, "dev")
        self.etc = os.path.join(self.root, "etc", "iscsi")
        self.simdir = os.path.join(self.root, "sim")
        self.nodes_dir = os.path.join(self.etc, "nodes")
        self.st_dir = os.path.join(self.etc, "send_targets")
        self._targets = None    # the array's targets, cached (only this API changes them)

    # -- setup --------------------------------------------------------------

    def init(self) -> "SimHost":
        for d in (self.simdir, self.nodes_dir, self.st_dir, os.path.join(self.etc, "ifaces"),
                  os.path.join(self.sys, "class", "scsi_host"),
                  os.path.join(self.sys, "class", "iscsi_host"),
                  os.path.join(self.sys, "class", "iscsi_session"),
                  os.path.join(self.sys, "class", "iscsi_connection"),
                  os.path.join(self.sys, "class", "block"),
                  os.path.join(self.sys, "bus", "scsi", "devices"),
                  os.path.join(self.sys, "block"),
                  os.path.join(self.sys, "dev", "block"),
                  os.path.join(self.sys, "devices", "platform"),
                  os.path.join(self.sys, "devices", "virtual", "block"),
                  os.path.join(self.sys, "module", "scsi_transport_iscsi"),
                  os.path.join(self.sys, "class", "iscsi_transport", "tcp"),
                  os.path.join(self.dev, "disk", "by-path"),
                  os.path.join(self.dev, "disk", "by-id"),
                  os.path.join(self.dev, "mapper")):
            os.makedirs(d, exist_ok=True)
        _write(os.path.join(self.sys, "module", "scsi_transport_iscsi", "version"),
               TRANSPORT_CLASS_VERSION + "\n")
        _write(os.path.join(self.sys, "class", "iscsi_transport", "tcp", "handle"),
               "18446744072102170752\n")
        _write(os.path.join(self.sys, "class", "iscsi_transport", "tcp", "caps"), "0x39\n")
        _write(os.path.join(self.etc, "initiatorname.iscsi"), f"InitiatorName={INITIATOR}\n")
        if not os.path.exists(self._state_file):
            self._save_state({"next_sid": 1, "next_host": 2, "next_dm": 0})
        if not os.path.exists(self._targets_file):
            self._save_targets({})
        return self

    @property
    def _state_file(self) -> str:
        return os.path.join(self.simdir, "state.json")

    @property
    def _targets_file(self) -> str:
        return os.path.join(self.simdir, "targets.json")

    def _load_state(self) -> dict:
        with open(self._state_file) as f:
            return json.load(f)

    def _save_state(self, st: dict) -> None:
        _write(self._state_file, json.dumps(st))

    def _load_targets(self) -> dict:
        if self._targets is None:
            with open(self._targets_file) as f:
                self._targets = json.load(f)
        return self._targets

    def _save_targets(self, t: dict) -> None:
        self._targets = t
        _write(self._targets_file, json.dumps(t, indent=1, sort_keys=True))

    @contextlib.contextmanager
    def locked(self):
        os.makedirs(self.simdir, exist_ok=True)
        with open(os.path.join(self.simdir, "lock"), "a") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def log(self, prog: str, argv: list[str], rc: int) -> None:
        with open(os.path.join(self.simdir, "commands.log"), "a") as f:
            f.write(json.dumps({"prog": prog, "argv": argv, "rc": rc, "ts": time.time()}) + "\n")

    def commands(self, prog: str | None = None) -> list[dict]:
        try:
            with open(os.path.join(self.simdir, "commands.log")) as f:
                out = [json.loads(line) for line in f if line.strip()]
        except FileNotFoundError:
            return []
        return [c for c in out if prog in (None, c["prog"])]

    # -- the storage array --------------------------------------------------

    def add_target(self, iqn: str, portals: list[str], luns: dict | list,
                   tpgt: int = 1) -> None:
        """What the array exports: ``luns`` is {lun: wwid} or a list of LUN numbers."""
        if not isinstance(luns, dict):
            luns = {int(lun): None for lun in luns}
        t = self._load_targets()
        t[iqn] = {"portals": list(portals), "tpgt": tpgt,
                  "luns": {str(k): (v or self._wwid(iqn, int(k))) for k, v in luns.items()}}
        self._save_targets(t)

    @staticmethod
    def _wwid(iqn: str, lun: int) -> str:
        import hashlib
        return "36001405" + hashlib.sha1(f"{iqn}/{lun}".encode()).hexdigest()[:24]

    def remove_lun(self, iqn: str, lun: int) -> None:
        t = self._load_targets()
        t[iqn]["luns"].pop(str(lun), None)
        self._save_targets(t)

    # -- node database (R/etc/iscsi, open-iscsi's layout) -------------------

    def _node_path(self, iqn: str, addr: str, port: int, tpgt: int, iface: str) -> str:
        """A static record (``--op new``, tpgt -1) is a file ``<iqn>/<addr>,<port>``; a
        discovered one ``<iqn>/<addr>,<port>,<tpgt>/<iface>`` (idbm's two layouts)."""
        if tpgt == -1:
            return os.path.join(self.nodes_dir, iqn, f"{addr},{port}")
        return os.path.join(self.nodes_dir, iqn, f"{addr},{port},{tpgt}", iface)

    def node_new(self, portal: str, iqn: str, *, tpgt: int = -1, iface: str = "default",
                 discovery: tuple[str, int] | None = None, **settings) -> dict:
        addr, port, ptpgt = split_portal(portal)
        tpgt = ptpgt if ptpgt is not None else tpgt
        text = NODE_TEMPLATE.format(
            name=iqn, tpgt=tpgt, iface=iface, address=addr, port=port,
            disc_address=discovery[0] if discovery else "<empty>",
            disc_port=discovery[1] if discovery else 0,
            disc_type="send_targets" if discovery else "static")
        rec = _parse_record(text)
        for k, v in settings.items():
            rec[k.replace("__", ".")] = str(v)
        path = self._node_path(iqn, addr, port, tpgt, iface)
        # a record for the same portal in another layout/tpgt is replaced, as idbm does
        tdir = os.path.join(self.nodes_dir, iqn)
        for p in os.listdir(tdir) if os.path.isdir(tdir) else ():
            full = os.path.join(tdir, p)
            if (p == f"{addr},{port}" or p.startswith(f"{addr},{port},")) \
                    and not path.startswith(full + "/") and full != path:
                if os.path.isdir(full):
                    shutil.rmtree(full, ignore_errors=True)
                else:
                    os.unlink(full)
        self._write_record(path, rec)
        return rec

    def _write_record(self, path: str, rec: dict) -> None:
        """idbm's file format: empty values are not written."""
        os.makedirs(os.path.dirname(path), exist_ok=True)
        body = "".join(f"{k} = {v}\n" for k, v in rec.items() if v not in ("", "<empty>"))
        _write(path, f"# BEGIN RECORD {VERSION}\n{body}# END RECORD\n")

    def node_records(self) -> list[tuple[str, dict]]:
        """(path, record) sorted like libopeniscsiusr (scandir alphasort)."""
        out = []
        if not os.path.isdir(self.nodes_dir):
            return out
        for iqn in sorted(os.listdir(self.nodes_dir)):
            tdir = os.path.join(self.nodes_dir, iqn)
            for portal in sorted(os.listdir(tdir)):
                pdir = os.path.join(tdir, portal)
                paths = [pdir] if os.path.isfile(pdir) else \
                    [os.path.join(pdir, i) for i in sorted(os.listdir(pdir))]
                for path in paths:
                    with open(path) as f:
                        out.append((path, _load_record(f.read())))
        return out

    def node_delete(self, path: str) -> None:
        os.unlink(path)
        pdir = os.path.dirname(path)
        for d in (pdir, os.path.dirname(pdir)):
            if os.path.realpath(d) != os.path.realpath(self.nodes_dir):
                with contextlib.suppress(OSError):
                    os.rmdir(d)

    # -- kernel: sessions ---------------------------------------------------

    def sessions(self) -> list[dict]:
        cls = os.path.join(self.sys, "class", "iscsi_session")
        out = [self._session_info(int(name[len("session"):]))
               for name in (os.listdir(cls) if os.path.isdir(cls) else ())]
        return sorted(out, key=lambda s: s["sid"])

    def _session_info(self, sid: int) -> dict:
        sdir = os.path.join(self.sys, "class", "iscsi_session", f"session{sid}")
        conn = os.path.join(self.sys, "class", "iscsi_connection", f"connection{sid}:0")
        real = os.path.realpath(sdir)
        host = int(re.search(r"/host(\d+)/session", real).group(1))
        return {
            "sid": sid, "host": host, "iqn": _read(os.path.join(sdir, "targetname")),
            "tpgt": int(_read(os.path.join(sdir, "tpgt"), "1")),
            "state": _read(os.path.join(sdir, "state"), "LOGGED_IN"),
            "address": _read(os.path.join(conn, "persistent_address")),
            "port": int(_read(os.path.join(conn, "persistent_port"), str(DEFAULT_PORT))),
            "cur_address": _read(os.path.join(conn, "address")),
            "cur_port": int(_read(os.path.join(conn, "port"), str(DEFAULT_PORT))),
            "username": _read(os.path.join(sdir, "username"), ""),
            "password": _read(os.path.join(sdir, "password"), ""),
            "ifacename": _read(os.path.join(sdir, "ifacename"), "default"),
            "initiatorname": _read(os.path.join(sdir, "initiatorname"), INITIATOR),
            "recovery_tmo": _read(os.path.join(sdir, "recovery_tmo"), "120"),
            "dir": os.path.dirname(os.path.dirname(real)),
        }

    def _host_dir(self, host: int) -> str:
        return os.path.join(self.sys, "devices", "platform", f"host{host}")

    def login(self, portal: str, iqn: str, *, username: str = "", password: str = "",
              scan: bool = True, luns: list[int] | None = None) -> int:
        """Create a session (what iscsid + iscsi_tcp do on login); returns its sid."""
        addr, port, _ = split_portal(portal)
        targets = self._load_targets()
        tgt = targets.get(iqn)
        if tgt is None or join_portal(addr, port) not in tgt["portals"]:
            raise SimError("connection timed out", ERR_TRANS_TIMEOUT)
        st = self._load_state()
        sid, host = st["next_sid"], st["next_host"]
        st["next_sid"] += 1
        st["next_host"] += 1
        self._save_state(st)
        hdir = self._host_dir(host)
        sh = os.path.join(hdir, "scsi_host", f"host{host}")
        os.makedirs(sh)
        _write(os.path.join(sh, "proc_name"), "iscsi_tcp\n")
        _write(os.path.join(sh, "state"), "running\n")
        _write(os.path.join(sh, "scan"))
        _symlink(hdir, os.path.join(sh, "device"))
        _symlink(sh, os.path.join(self.sys, "class", "scsi_host", f"host{host}"))
        ih = os.path.join(hdir, "iscsi_host", f"host{host}")
        os.makedirs(ih)
        _write(os.path.join(ih, "ipaddress"), "127.0.0.1\n")
        _write(os.path.join(ih, "initiatorname"), INITIATOR + "\n")
        _symlink(hdir, os.path.join(ih, "device"))
        _symlink(ih, os.path.join(self.sys, "class", "iscsi_host", f"host{host}"))
        sdir = os.path.join(hdir, f"session{sid}")
        isess = os.path.join(sdir, "iscsi_session", f"session{sid}")
        os.makedirs(isess)
        for attr, val in (("targetname", iqn), ("tpgt", str(tgt["tpgt"])),
                          ("state", "LOGGED_IN"), ("recovery_tmo", "120"),
                          ("ifacename", "default"), ("initiatorname", INITIATOR),
                          ("username", username), ("password", password),
                          ("username_in", ""), ("password_in", ""),
                          ("lu_reset_tmo", "30"), ("tgt_reset_tmo", "30"),
                          ("abort_tmo", "15"), ("target_id", "0"),
                          ("first_burst_len", "65536"), ("max_burst_len", "262144"),
                          ("immediate_data", "1"), ("initial_r2t", "1"),
                          ("max_outstanding_r2t", "1"), ("erl", "0"),
                          ("data_pdu_in_order", "1"), ("data_seq_in_order", "1"),
                          # pid of the iscsid that made it (-1 would mean "flash")
                          ("creator", "1001")):
            # the kernel exposes the CHAP secret here (root-readable)
            _write(os.path.join(isess, attr), val + "\n")
        _symlink(sdir, os.path.join(isess, "device"))
        _symlink(isess, os.path.join(self.sys, "class", "iscsi_session", f"session{sid}"))
        cdir = os.path.join(sdir, f"connection{sid}:0", "iscsi_connection",
                            f"connection{sid}:0")
        os.makedirs(cdir)
        for attr, val in (("persistent_address", addr), ("persistent_port", str(port)),
                          ("address", addr), ("port", str(port)), ("state", "up"),
                          ("header_digest", "0"), ("data_digest", "0"),
                          ("max_recv_dlength", "262144"), ("max_xmit_dlength", "262144")):
            _write(os.path.join(cdir, attr), val + "\n")
        _symlink(cdir, os.path.join(self.sys, "class", "iscsi_connection",
                                    f"connection{sid}:0"))
        os.makedirs(os.path.join(sdir, f"target{host}:0:0"))
        if scan:
            for lun in sorted(int(x) for x in tgt["luns"]):
                if luns is None or lun in luns:
                    self.add_lun(sid, lun)
        return sid

    def _session(self, sid: int) -> dict:
        if os.path.islink(os.path.join(self.sys, "class", "iscsi_session", f"session{sid}")):
            return self._session_info(sid)
        raise SimError(f"Could not get session info for sid {sid}", ERR_SYSFS_LOOKUP)

    def add_lun(self, sid: int, lun: int, *, state: str = "running") -> str:
        """The kernel finding LUN ``lun`` on session ``sid``; returns the sd name."""
        s = self._session(sid)
        host = s["host"]
        wwid = self._load_targets()[s["iqn"]]["luns"].get(str(lun))
        if wwid is None:
            raise SimError(f"target {s['iqn']} has no LUN {lun}", ERR_INVAL)
        hctl = f"{host}:0:0:{lun}"
        ldir = os.path.join(s["dir"], f"target{host}:0:0", hctl)
        bdir = os.path.join(ldir, "block")
        if os.path.isdir(bdir) and os.listdir(bdir):
            return os.listdir(bdir)[0]
        used = {sd_index(n) for n in os.listdir(os.path.join(self.sys, "block"))
                if n.startswith("sd")}
        idx = next(i for i in range(len(used) + 1) if i not in used)
        name = sd_name(idx)
        os.makedirs(ldir, exist_ok=True)
        for attr, val in (("state", state), ("vendor", "LIO-ORG"), ("model", "sim"),
                          ("wwid", "naa." + wwid[1:]), ("queue_depth", "32")):
            _write(os.path.join(ldir, attr), val + "\n")
        _write(os.path.join(ldir, "delete"))
        _write(os.path.join(ldir, "rescan"))
        blk = os.path.join(bdir, name)
        os.makedirs(os.path.join(blk, "holders"))
        os.makedirs(os.path.join(blk, "slaves"))
        _write(os.path.join(blk, "dev"), sd_devt(idx) + "\n")
        _write(os.path.join(blk, "size"), "2097152\n")
        _write(os.path.join(blk, "ro"), "0\n")
        _symlink(ldir, os.path.join(blk, "device"))
        _symlink(blk, os.path.join(self.sys, "block", name))
        _symlink(blk, os.path.join(self.sys, "class", "block", name))
        _symlink(blk, os.path.join(self.sys, "dev", "block", sd_devt(idx)))
        _symlink(ldir, os.path.join(self.sys, "bus", "scsi", "devices", hctl))
        # udev
        _write(os.path.join(self.dev, name), f"simulated block device {name} wwid {wwid}\n")
        addr = s["address"]
        by_path = f"ip-{join_portal(addr, s['port']).replace('[', '').replace(']', '')}" \
                  f"-iscsi-{s['iqn']}-lun-{lun}"
        _symlink(os.path.join(self.dev, name), os.path.join(self.dev, "disk", "by-path", by_path))
        _symlink(os.path.join(self.dev, name), os.path.join(self.dev, "disk", "by-id",
                                                            f"scsi-{wwid}"))
        return name

    def _device_dir(self, name: str) -> str | None:
        """The sysfs directory of block device ``name`` (a disk, a partition, a dm or md
        device), through /sys/class/block as the kernel links every one of them."""
        link = os.path.join(self.sys, "class", "block", name)
        return os.path.realpath(link) if os.path.islink(link) else None

    def partitions(self, name: str) -> list[str]:
        """The partitions of block device ``name`` (sysfs: subdirectories with a
        ``partition`` attribute)."""
        d = self._device_dir(name)
        if d is None:
            return []
        return sorted((e for e in os.listdir(d)
                       if os.path.isfile(os.path.join(d, e, "partition"))),
                      key=lambda e: (len(e), e))

    def _unlink_devt(self, devt: str | None) -> None:
        if devt:
            _unlink(os.path.join(self.sys, "dev", "block", devt))

    def _remove_udev_links(self, target: str) -> None:
        """udev's removal of every /dev symlink to ``target`` (disk/by-*, mapper, LVM)."""
        for top in os.listdir(self.dev):
            d = os.path.join(self.dev, top)
            if not os.path.isdir(d) or os.path.islink(d) or top in ("pts", "shm"):
                continue
            subs = [os.path.join(d, x) for x in os.listdir(d)] if top == "disk" else [d]
            for sub in subs:
                if not os.path.isdir(sub) or os.path.islink(sub):
                    continue
                removed = False
                for link in os.listdir(sub):
                    p = os.path.join(sub, link)
                    if os.path.islink(p) and os.path.realpath(p) == target:
                        _unlink(p)
                        removed = True
                if removed and top not in ("disk", "mapper") and not os.listdir(sub):
                    os.rmdir(sub)       # an LVM volume group directory left empty

    def _remove_block_node(self, name: str, bdir: str) -> None:
        """The kernel dropping block device ``name`` (sysfs dir ``bdir``) and udev its
        /dev node and links; its holders lose it from their ``slaves``."""
        for holder in os.listdir(os.path.join(bdir, "holders")):
            hdir = self._device_dir(holder)
            if hdir:
                _unlink(os.path.join(hdir, "slaves", name))
        _unlink(os.path.join(self.sys, "class", "block", name))
        self._unlink_devt(_read(os.path.join(bdir, "dev")))
        target = os.path.join(self.dev, name)
        self._remove_udev_links(target)
        _unlink(target)

    def delete_device(self, name: str) -> None:
        """echo 1 > /sys/block/<name>/device/delete: the disk and its partitions go,
        with udev's links."""
        blk = self._device_dir(name)
        if blk is None:
            return
        ldir = os.path.dirname(os.path.dirname(blk))
        _unlink(os.path.join(self.sys, "bus", "scsi", "devices", os.path.basename(ldir)))
        for part in self.partitions(name):
            self._remove_block_node(part, os.path.join(blk, part))
        self._remove_block_node(name, blk)
        shutil.rmtree(ldir, ignore_errors=True)
        _unlink(os.path.join(self.sys, "block", name))

    def scan(self, host: int, channel: str, target: str, lun: str) -> list[str]:
        """echo "C T L" > /sys/class/scsi_host/hostH/scan ("-" is a wildcard)."""
        for s in self.sessions():
            if s["host"] != host:
                continue
            luns = self._load_targets().get(s["iqn"], {}).get("luns", {})
            want = sorted(int(x) for x in luns) if lun == "-" else [int(lun)]
            return [self.add_lun(s["sid"], n) for n in want if str(n) in luns]
        return []

    def logout(self, sid: int) -> None:
        s = self._session(sid)
        host = s["host"]
        tdir = os.path.join(s["dir"], f"target{host}:0:0")
        for hctl in os.listdir(tdir) if os.path.isdir(tdir) else ():
            bdir = os.path.join(tdir, hctl, "block")
            for name in os.listdir(bdir) if os.path.isdir(bdir) else ():
                self.delete_device(name)
            _unlink(os.path.join(self.sys, "bus", "scsi", "devices", hctl))
        for cls, name in (("iscsi_session", f"session{sid}"),
                          ("iscsi_connection", f"connection{sid}:0"),
                          ("scsi_host", f"host{host}"), ("iscsi_host", f"host{host}")):
            _unlink(os.path.join(self.sys, "class", cls, name))
        shutil.rmtree(self._host_dir(host), ignore_errors=True)

    # -- block devices above the SCSI disks: partitions, dm, md --------------

    def add_partition(self, disk: str, number: int, *, fs_uuid: str | None = None,
                      label: str | None = None) -> str:
        """Partition ``number`` of ``disk`` as the kernel shows it after a partition
        table read (``/sys/block/sdX/sdXN``, ``partition``, ``dev`` = the disk's minor
        + N) and udev links it (``...-lun-L-partN``, ``scsi-<wwid>-partN``, and
        ``by-uuid``/``by-label`` when a filesystem is on it). Returns its name."""
        blk = self._device_dir(disk)
        if blk is None:
            raise SimError(f"no block device {disk}", ERR_INVAL)
        name = f"{disk}p{number}" if disk[-1].isdigit() else f"{disk}{number}"
        pdir = os.path.join(blk, name)
        os.makedirs(os.path.join(pdir, "holders"), exist_ok=True)
        major, minor = _read(os.path.join(blk, "dev")).split(":")
        _write(os.path.join(pdir, "dev"), f"{major}:{int(minor) + number}\n")
        for attr, val in (("partition", str(number)), ("start", str(2048 * number)),
                          ("size", "204800"), ("ro", "0")):
            _write(os.path.join(pdir, attr), val + "\n")
        _symlink(pdir, os.path.join(self.sys, "class", "block", name))
        _symlink(pdir, os.path.join(self.sys, "dev", "block",
                                    _read(os.path.join(pdir, "dev"))))
        _write(os.path.join(self.dev, name), f"simulated partition {name}\n")
        node = os.path.join(self.dev, name)
        disk_node = os.path.join(self.dev, disk)
        for sub in ("by-path", "by-id"):
            d = os.path.join(self.dev, "disk", sub)
            for link in os.listdir(d):
                if "-part" not in link and os.path.realpath(os.path.join(d, link)) == disk_node:
                    _symlink(node, os.path.join(d, f"{link}-part{number}"))
        if fs_uuid:
            _symlink(node, os.path.join(self.dev, "disk", "by-uuid", fs_uuid))
        if label:
            _symlink(node, os.path.join(self.dev, "disk", "by-label", label))
        return name

    def add_dm(self, slaves: list[str], dm_name: str, uuid: str | None = None, *,
               lvm: tuple[str, str] | None = None) -> str:
        """A device-mapper map on ``slaves`` (disks, partitions or other maps):
        multipath when uuid starts with "mpath-" (the default), dm-crypt with
        "CRYPT-...", LVM with "LVM-..." (``lvm=(vg, lv)`` adds udev's /dev/<vg>/<lv>)."""
        st = self._load_state()
        n = st["next_dm"]
        st["next_dm"] += 1
        self._save_state(st)
        name = f"dm-{n}"
        d = self._virtual_block(name, f"252:{n}", slaves)
        os.makedirs(os.path.join(d, "dm"))
        _write(os.path.join(d, "dm", "name"), dm_name + "\n")
        _write(os.path.join(d, "dm", "uuid"), (uuid or f"mpath-{dm_name}") + "\n")
        _write(os.path.join(self.dev, name), f"simulated dm device {name}\n")
        _symlink(os.path.join(self.dev, name), os.path.join(self.dev, "mapper", dm_name))
        if lvm:
            _symlink(os.path.join(self.dev, name), os.path.join(self.dev, *lvm))
        return name

    def add_md(self, slaves: list[str], name: str = "md127", level: str = "raid1") -> str:
        """An md array on ``slaves`` (major 9), as mdadm --assemble leaves it."""
        d = self._virtual_block(name, f"9:{int(name[2:]) if name[2:].isdigit() else 127}",
                                slaves)
        os.makedirs(os.path.join(d, "md"))
        _write(os.path.join(d, "md", "level"), level + "\n")
        _write(os.path.join(d, "md", "array_state"), "clean\n")
        _write(os.path.join(self.dev, name), f"simulated md device {name}\n")
        return name

    def _virtual_block(self, name: str, devt: str, slaves: list[str]) -> str:
        """/sys/devices/virtual/block/<name> stacked on ``slaves`` (each slave's
        ``holders`` and the new device's ``slaves`` link the two)."""
        d = os.path.join(self.sys, "devices", "virtual", "block", name)
        os.makedirs(os.path.join(d, "holders"))
        os.makedirs(os.path.join(d, "slaves"))
        _write(os.path.join(d, "dev"), devt + "\n")
        _write(os.path.join(d, "size"), "204800\n")
        for s in slaves:
            sdir = self._device_dir(s)
            if sdir is None:
                raise SimError(f"no block device {s}", ERR_INVAL)
            _symlink(sdir, os.path.join(d, "slaves", s))
            _symlink(d, os.path.join(sdir, "holders", name))
        _symlink(d, os.path.join(self.sys, "block", name))
        _symlink(d, os.path.join(self.sys, "class", "block", name))
        _symlink(d, os.path.join(self.sys, "dev", "block", devt))
        return d

    def back_with(self, name: str, real_device: str) -> str:
        """Make simulated block device ``name`` a real one: /dev/<name> becomes a block
        special file with ``real_device``'s number (a loop device, say), and sysfs
        ``dev`` says that number. Opening, mounting or claiming (O_EXCL) /dev/<name>
        then acts on the real device, and /proc/self/mountinfo shows its number."""
        st = os.stat(real_device)
        if not stat.S_ISBLK(st.st_mode):
            raise SimError(f"{real_device} is not a block device", ERR_INVAL)
        d = self._device_dir(name)
        if d is None:
            raise SimError(f"no block device {name}", ERR_INVAL)
        devt = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
        self._unlink_devt(_read(os.path.join(d, "dev")))
        _write(os.path.join(d, "dev"), devt + "\n")
        _symlink(d, os.path.join(self.sys, "dev", "block", devt))
        node = os.path.join(self.dev, name)
        _unlink(node)
        os.mknod(node, stat.S_IFBLK | 0o600, st.st_rdev)
        return devt

    # -- firmware ------------------------------------------------------------

    def set_ibft(self, portal: str, iqn: str, lun: int = 0, index: int = 0,
                 initiator: str = INITIATOR) -> None:
        """The iSCSI Boot Firmware Table the kernel's iscsi_ibft module exposes in
        /sys/firmware/ibft: the target the host booted from (iscsi_ibft.c's formats:
        the LUN as 8 bytes "%02x" each, IPv4 addresses dotted)."""
        addr, port, _ = split_portal(portal)
        base = os.path.join(self.sys, "firmware", "ibft")
        tdir = os.path.join(base, f"target{index}")
        os.makedirs(tdir, exist_ok=True)
        lun_bytes = [0] * 8
        lun_bytes[1] = lun & 0xFF
        lun_bytes[0] = (lun >> 8) & 0x3F
        for attr, val in (("index", str(index)), ("flags", "3"), ("ip-addr", addr),
                          ("port", str(port)), ("lun", "".join(f"{b:02x}" for b in lun_bytes)),
                          ("nic-assoc", "0"), ("chap-type", "0"), ("target-name", iqn)):
            _write(os.path.join(tdir, attr), val + "\n")
        idir = os.path.join(base, "initiator")
        os.makedirs(idir, exist_ok=True)
        for attr, val in (("index", "0"), ("flags", "3"), ("initiator-name", initiator)):
            _write(os.path.join(idir, attr), val + "\n")
        # the NIC the firmware booted through, linked to its PCI function and netdev
        edir = os.path.join(base, "ethernet0")
        os.makedirs(edir, exist_ok=True)
        for attr, val in (("index", "0"), ("flags", "3"), ("ip-addr", "192.0.2.200"),
                          ("prefix-len", "24"), ("subnet-mask", "255.255.255.0"),
                          ("origin", "1"), ("gateway", "192.0.2.1"), ("vlan", "0"),
                          ("mac", "52:54:00:12:34:56")):
            _write(os.path.join(edir, attr), val + "\n")
        pci = os.path.join(self.sys, "devices", "pci0000:00", "0000:00:03.0")
        os.makedirs(os.path.join(pci, "net", "eth0"), exist_ok=True)
        _symlink(pci, os.path.join(edir, "device"))

    # -- iscsid ----------------------------------------------------------------

    def set_iscsid(self, running: bool) -> None:
        """Whether iscsid answers: logins and logouts go through it (its IPC socket);
        listings and the node database do not need it."""
        st = self._load_state()
        st["iscsid_down"] = not running
        self._save_state(st)

    def iscsid_running(self) -> bool:
        return not self._load_state().get("iscsid_down", False)

    # -- conveniences for tests ---------------------------------------------

    def connect(self, portal: str, iqn: str, *, luns: list[int] | None = None,
                startup: str = "automatic", username: str = "", password: str = "") -> int:
        """What a successful os-brick connect leaves: a node record and a session."""
        extra = {"node__startup": startup, "node__conn[0]__startup": startup}
        if username:
            extra.update({"node__session__auth__authmethod": "CHAP",
                          "node__session__auth__username": username,
                          "node__session__auth__password": password})
        with self.locked():
            self.node_new(portal, iqn, **extra)
            return self.login(portal, iqn, username=username, password=password, luns=luns)

    def devices(self, sid: int) -> dict[int, str]:
        """{lun: sd name} of a session."""
        s = self._session(sid)
        tdir = os.path.join(s["dir"], f"target{s['host']}:0:0")
        out = {}
        for hctl in os.listdir(tdir) if os.path.isdir(tdir) else ():
            bdir = os.path.join(tdir, hctl, "block")
            names = os.listdir(bdir) if os.path.isdir(bdir) else []
            if names:
                out[int(hctl.rsplit(":", 1)[1])] = names[0]
        return out

    def by_path(self, portal: str, iqn: str, lun: int) -> str:
        addr, port, _ = split_portal(portal)
        return f"/dev/disk/by-path/ip-{addr}:{port}-iscsi-{iqn}-lun-{lun}"

    def real(self, path: str) -> str:
        """A /sys or /dev path as it is in this tree (outside a mount namespace)."""
        for prefix, base in (("/sys/", self.sys), ("/dev/", self.dev),
                             ("/etc/iscsi/", self.etc)):
            if path.startswith(prefix):
                return os.path.join(base, path[len(prefix):])
        return path


def _parse_record(text: str) -> dict:
    rec = {}
    for line in text.splitlines():
        if line.startswith("#") or " = " not in line:
            continue
        k, v = line.split(" = ", 1)
        rec[k.strip()] = v.strip()
    return rec


_TEMPLATE_KEYS = list(_parse_record(NODE_TEMPLATE))


def _load_record(text: str) -> dict:
    """A record file -> every field in iscsiadm's print order ("<empty>" when unset)."""
    stored = _parse_record(text)
    rec = {k: stored.pop(k, "<empty>") for k in _TEMPLATE_KEYS}
    rec.update(stored)
    return rec


# --------------------------------------------------------------------------
# iscsiadm
# --------------------------------------------------------------------------

_LONG = {"mode": "m", "targetname": "T", "portal": "p", "interface": "I", "op": "o",
         "name": "n", "value": "v", "login": "l", "logout": "u", "print": "P", "sid": "r",
         "type": "t", "show": "S", "loginall": "L", "logoutall": "U", "discover": "D",
         "debug": "d", "host": "H", "version": "V"}
_WITH_ARG = set("mTpIonvPrtLUdH")


def _parse_args(argv: list[str]) -> dict:
    opts: dict = {"n": [], "v": [], "o": []}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("--"):
            key, eq, val = a[2:].partition("=")
            short = _LONG.get(key)
            if short is None:
                raise SimError(f"unrecognized option '{a}'", ERR_INVAL)
        elif a.startswith("-") and len(a) >= 2:
            short, val, eq = a[1], a[2:], bool(a[2:])
        else:
            raise SimError(f"unrecognized character '{a}'", ERR_INVAL)
        if short in _WITH_ARG:
            if not eq:
                i += 1
                if i >= len(argv):
                    raise SimError(f"option '{a}' requires an argument", ERR_INVAL)
                val = argv[i]
            if short in ("n", "v", "o"):
                opts[short].append(val)
            else:
                opts[short] = val
        else:
            opts[short] = True
        i += 1
    return opts


class Out:
    def __init__(self):
        self.out: list[str] = []
        self.err: list[str] = []

    def p(self, line: str = "") -> None:
        self.out.append(line + "\n")

    def e(self, msg: str) -> None:
        self.err.append(f"iscsiadm: {msg}\n")


def iscsiadm(sim: SimHost, argv: list[str], out: Out) -> int:
    try:
        opts = _parse_args(argv)
        if opts.get("V"):
            out.p(f"iscsiadm version {VERSION}")
            return 0
        mode = opts.get("m")
        if mode == "session":
            return _mode_session(sim, opts, out)
        if mode == "node":
            return _mode_node(sim, opts, out)
        if mode in ("discovery", "discoverydb"):
            return _mode_discovery(sim, opts, out, mode)
        if mode == "iface":
            return _mode_iface(opts, out)
        raise SimError("You must specify a mode", ERR_INVAL) if mode is None \
            else SimError(f"Invalid mode {mode}", ERR_INVAL)
    except SimError as e:
        out.e(str(e))
        return e.rc


def _iface_lines(prefix: str, s: dict) -> list[str]:
    return [f"{prefix}Iface Name: {s['ifacename']}",
            f"{prefix}Iface Transport: tcp",
            f"{prefix}Iface Initiatorname: {s['initiatorname']}",
            f"{prefix}Iface IPaddress: 127.0.0.1",
            f"{prefix}Iface HWaddress: default",
            f"{prefix}Iface Netdev: default"]


def _print_session_tree(sim: SimHost, sessions: list[dict], level: int, show: bool,
                        out: Out) -> None:
    if level >= 3:
        out.p(f"iSCSI Transport Class version {TRANSPORT_CLASS_VERSION}")
        out.p(f"version {VERSION}")
    prev = None
    for s in sessions:
        if prev is None or prev["iqn"] != s["iqn"]:
            out.p(f"Target: {s['iqn']} (non-flash)")
            prev = None
        if prev is not None and prev["cur_address"] == s["cur_address"] \
                and prev["cur_port"] == s["cur_port"]:
            out.p()
        else:
            out.p(f"\tCurrent Portal: {join_portal(s['cur_address'], s['cur_port'])},{s['tpgt']}")
            out.p(f"\tPersistent Portal: {join_portal(s['address'], s['port'])},{s['tpgt']}")
        out.p("\t\t**********")
        out.p("\t\tInterface:")
        out.p("\t\t**********")
        for line in _iface_lines("\t\t", s):
            out.p(line)
        out.p(f"\t\tSID: {s['sid']}")
        out.p("\t\tiSCSI Connection State: LOGGED IN")
        out.p(f"\t\tiSCSI Session State: {s['state']}")
        out.p("\t\tInternal iscsid Session State: NO CHANGE")
        if level >= 2:
            out.p("\t\t*********")
            out.p("\t\tTimeouts:")
            out.p("\t\t*********")
            out.p(f"\t\tRecovery Timeout: {s['recovery_tmo']}")
            out.p("\t\tTarget Reset Timeout: 30")
            out.p("\t\tLUN Reset Timeout: 30")
            out.p("\t\tAbort Timeout: 15")
            out.p("\t\t*****")
            out.p("\t\tCHAP:")
            out.p("\t\t*****")
            out.p(f"\t\tusername: {s['username'] or '<empty>'}")
            out.p("\t\tpassword: " + ((s["password"] or "<empty>") if show else "********"))
            out.p("\t\tusername_in: <empty>")
            out.p("\t\tpassword_in: " + ("<empty>" if show else "********"))
            out.p("\t\t************************")
            out.p("\t\tNegotiated iSCSI params:")
            out.p("\t\t************************")
            for k, v in (("HeaderDigest", "None"), ("DataDigest", "None"),
                         ("MaxRecvDataSegmentLength", "262144"),
                         ("MaxXmitDataSegmentLength", "262144"),
                         ("FirstBurstLength", "65536"), ("MaxBurstLength", "262144"),
                         ("ImmediateData", "Yes"), ("InitialR2T", "Yes"),
                         ("MaxOutstandingR2T", "1")):
                out.p(f"\t\t{k}: {v}")
        if level >= 3:
            out.p("\t\t************************")
            out.p("\t\tAttached SCSI devices:")
            out.p("\t\t************************")
            host = s["host"]
            hstate = _read(os.path.join(sim.sys, "class", "scsi_host", f"host{host}", "state"),
                           None)
            out.p(f"\t\tHost Number: {host}\tState: {hstate or 'Unknown'}")
            tdir = os.path.join(s["dir"], f"target{host}:0:0")
            luns = sorted(os.listdir(tdir), key=lambda h: int(h.rsplit(":", 1)[1])) \
                if os.path.isdir(tdir) else []
            for hctl in luns:
                lun = int(hctl.rsplit(":", 1)[1])
                out.p(f"\t\tscsi{host} Channel 00 Id 0 Lun: {lun}")
                bdir = os.path.join(tdir, hctl, "block")
                names = os.listdir(bdir) if os.path.isdir(bdir) else []
                if names:
                    state = _read(os.path.join(tdir, hctl, "state"), None)
                    out.out.append(f"\t\t\tAttached scsi disk {names[0]}\t\t"
                                   f"State: {state or 'Unknown'}\n")
        prev = s


def _mode_session(sim: SimHost, opts: dict, out: Out) -> int:
    sessions = sim.sessions()
    if "r" in opts:
        sessions = [s for s in sessions if str(s["sid"]) == str(opts["r"])]
        if not sessions:
            out.e("could not read session targetname: 5")
            raise SimError(f"Could not get session info for sid {opts['r']}", ERR_SYSFS_LOOKUP)
    if opts.get("u"):
        return _logout_sessions(sim, sessions, out)
    if not sessions:
        raise SimError("No active sessions.", ERR_NO_OBJS_FOUND)
    level = int(opts.get("P", -1))
    if level in (0, -1):
        for s in sessions:
            out.p(f"tcp: [{s['sid']}] {join_portal(s['address'], s['port'])},{s['tpgt']} "
                  f"{s['iqn']} (non-flash)")
        return 0
    if level not in (1, 2, 3):
        raise SimError(f"Invalid info level {level}. Try 0 - 3.", ERR_INVAL)
    _print_session_tree(sim, sessions, level, bool(opts.get("S")), out)
    return 0


def _logout(sim: SimHost, s: dict, out: Out) -> bool:
    """One session's logout (session_mgmt.c's iscsi_logout_portal + log_logout_msg);
    False when iscsid, which does the logout, cannot be reached."""
    portal = f"{s['address']},{s['port']}"
    desc = f"[sid: {s['sid']}, target: {s['iqn']}, portal: {portal}]"
    out.p(f"Logging out of session {desc}")
    if not sim.iscsid_running():
        out.e("can not connect to iSCSI daemon (111)!")
        out.e(f"Could not logout of {desc}.")
        out.e(f"initiator reported error (20 - {_ERRSTR[20]})")
        return False
    sim.logout(s["sid"])
    out.p(f"Logout of {desc} successful.")
    return True


def _logout_sessions(sim: SimHost, sessions: list[dict], out: Out) -> int:
    """iscsi_logout_portals: a session whose logout failed does not count as found, so
    when none could be logged out the result is "No matching sessions found" (21)."""
    done = [s for s in sessions if _logout(sim, s, out)]
    if not done:
        raise SimError("No matching sessions found", ERR_NO_OBJS_FOUND)
    if len(done) < len(sessions):
        out.e("Could not logout of all requested sessions")
        return ERR_ISCSID_NOTCONN
    return 0


def _match_records(sim: SimHost, opts: dict) -> list[tuple[str, dict]]:
    iqn = opts.get("T")
    addr = port = None
    if opts.get("p"):
        addr, port, _ = split_portal(opts["p"])
    iface = opts.get("I")
    out = []
    for path, rec in sim.node_records():
        if iqn and rec.get("node.name") != iqn:
            continue
        if addr and (rec.get("node.conn[0].address") != addr
                     or int(rec.get("node.conn[0].port", 0)) != port):
            continue
        if iface and rec.get("iface.iscsi_ifacename") != iface:
            continue
        out.append((path, rec))
    return out


def _session_running(sim: SimHost, rec: dict) -> bool:
    return any(s["iqn"] == rec["node.name"] and s["address"] == rec["node.conn[0].address"]
               and s["port"] == int(rec["node.conn[0].port"]) for s in sim.sessions())


def _print_record(rec: dict, show: bool, out: Out) -> None:
    out.p(f"# BEGIN RECORD {VERSION}")
    for k, v in rec.items():
        if k in _PASSWORD_KEYS and not show and v not in ("", "<empty>"):
            v = "********"
        out.p(f"{k} = {v}")
    out.p("# END RECORD")


def _mode_node(sim: SimHost, opts: dict, out: Out) -> int:
    ops = opts["o"]
    op = ops[0] if ops else None
    login, logout = opts.get("l"), opts.get("u")
    has_pattern = any(opts.get(k) for k in ("T", "p", "I"))
    if not login and not logout and op is None and not has_pattern:
        recs = sim.node_records()
        if not recs:
            raise SimError("No records found", ERR_NO_OBJS_FOUND)
        level = int(opts.get("P", -1))
        if level == 1:
            last = None
            for _, rec in recs:
                if last is None or last["node.name"] != rec["node.name"]:
                    out.p(f"Target: {rec['node.name']}")
                    last = None
                if last is None or (last["node.conn[0].address"], last["node.conn[0].port"]) \
                        != (rec["node.conn[0].address"], rec["node.conn[0].port"]):
                    out.p(f"\tPortal: {join_portal(rec['node.conn[0].address'], int(rec['node.conn[0].port']))},"
                          f"{rec['node.tpgt']}")
                out.p(f"\t\tIface Name: {rec['iface.iscsi_ifacename']}")
                last = rec
            return 0
        for _, rec in recs:
            tpgt = int(rec["node.tpgt"]) & 0xFFFFFFFF
            out.p(f"{join_portal(rec['node.conn[0].address'], int(rec['node.conn[0].port']))},"
                  f"{tpgt} {rec['node.name']}")
        return 0
    if op == "new":
        if not opts.get("T") or not opts.get("p"):
            raise SimError("--targetname and --portal required for new", ERR_INVAL)
        iface = opts.get("I") or "default"
        rec = sim.node_new(opts["p"], opts["T"], iface=iface)
        addr, port = rec["node.conn[0].address"], rec["node.conn[0].port"]
        out.p(f"New iSCSI node [tcp:[hw=,ip=,net_if=,iscsi_if={iface}] {addr},{port},"
              f"{rec['node.tpgt']} {rec['node.name']}] added")
        return 0
    if login:
        recs = _match_records(sim, opts)
        if not recs:
            raise SimError("No records found", ERR_NO_OBJS_FOUND)
        rc = 0
        for _, rec in recs:
            addr, port = rec["node.conn[0].address"], rec["node.conn[0].port"]
            desc = (f"[iface: {rec['iface.iscsi_ifacename']}, target: {rec['node.name']}, "
                    f"portal: {addr},{port}]")
            if _session_running(sim, rec):
                out.e(f"{rec['iface.iscsi_ifacename']}: 1 session requested, but 1 already "
                      f"present.")
                rc = rc or ERR_SESS_EXISTS
                continue
            out.p(f"Logging in to {desc}")
            if not sim.iscsid_running():
                out.e("can not connect to iSCSI daemon (111)!")
                out.e(f"Could not login to {desc}.")
                out.e(f"initiator reported error (20 - {_ERRSTR[20]})")
                rc = rc or ERR_ISCSID_NOTCONN
                continue
            try:
                sim.login(join_portal(addr, int(port)), rec["node.name"],
                          username=("" if rec["node.session.auth.username"] == "<empty>"
                                    else rec["node.session.auth.username"]),
                          password=("" if rec["node.session.auth.password"] == "<empty>"
                                    else rec["node.session.auth.password"]),
                          scan=rec.get("node.session.scan", "auto") != "manual")
            except SimError as e:
                out.e(f"Could not login to {desc}.")
                out.e(f"initiator reported error ({e.rc} - {_ERRSTR.get(e.rc, str(e))})")
                rc = rc or e.rc
                continue
            out.p(f"Login to {desc} successful.")
        if rc:
            out.e("Could not log into all portals")
        return rc
    if logout:
        iqn = opts.get("T")
        addr = port = None
        if opts.get("p"):
            addr, port, _ = split_portal(opts["p"])
        matched = [s for s in sim.sessions()
                   if (not iqn or s["iqn"] == iqn)
                   and (addr is None or (s["address"] == addr and s["port"] == port))]
        if not matched:
            raise SimError("No matching sessions found", ERR_NO_OBJS_FOUND)
        return _logout_sessions(sim, matched, out)
    if op in (None, "show"):
        recs = _match_records(sim, opts)
        if not recs:
            raise SimError("No records found", ERR_NO_OBJS_FOUND)
        for _, rec in recs:
            _print_record(rec, bool(opts.get("S")), out)
        return 0
    if op == "update":
        names, values = opts["n"], opts["v"]
        if not names or len(names) != len(values):
            raise SimError("update requires name and value", ERR_INVAL)
        recs = _match_records(sim, opts)
        if not recs:
            raise SimError("No records found", ERR_NO_OBJS_FOUND)
        for path, rec in recs:
            for n, v in zip(names, values, strict=True):
                if n not in rec:
                    raise SimError(f"Cannot modify {n}. Invalid param name.", ERR_INVAL)
                rec[n] = v
                if n == "node.startup":
                    rec["node.conn[0].startup"] = v
            sim._write_record(path, rec)
        return 0
    if op == "delete":
        recs = _match_records(sim, opts)
        if not recs:
            raise SimError("No records found", ERR_NO_OBJS_FOUND)
        rc = 0
        for path, rec in recs:
            if _session_running(sim, rec):
                out.e(f"This command will remove the record [iface: "
                      f"{rec['iface.iscsi_ifacename']}, target: {rec['node.name']}, portal: "
                      f"{rec['node.conn[0].address']},{rec['node.conn[0].port']}], but a "
                      f"session is using it. Logout session then rerun command to remove "
                      f"record.")
                rc = ERR_SESS_EXISTS
                continue
            sim.node_delete(path)
        if rc:
            out.e(f"Could not execute operation on all records: {_ERRSTR[rc]}")
        return rc
    raise SimError("operation is not supported.", ERR_INVAL)


_ERRSTR = {2: "session not found", 4: "encountered connection failure",
           7: "invalid parameter", 8: "connection timed out", 15: "session exists",
           20: "could not connect to iscsid", 21: "no objects found",
           22: "sysfs lookup failure"}


def _st_records(sim: SimHost) -> list[tuple[str, int]]:
    if not os.path.isdir(sim.st_dir):
        return []
    out = []
    for name in sorted(os.listdir(sim.st_dir)):
        addr, _, port = name.rpartition(",")
        out.append((addr, int(port)))
    return out


def _mode_discovery(sim: SimHost, opts: dict, out: Out, mode: str) -> int:
    ops = opts["o"]
    discover = mode == "discovery" or bool(opts.get("D"))
    if mode == "discoverydb" and not discover and ("show" in ops or not ops):
        level = int(opts.get("P", 0))
        recs = sim.node_records()
        found = 0
        if level < 1:
            for addr, port in _st_records(sim):
                out.p(f"{addr}:{port} via sendtargets")
                found += 1
        else:
            out.p("SENDTARGETS:")
            sts = _st_records(sim)
            if not sts:
                out.p("No targets found.")
            for addr, port in sts:
                out.p(f"DiscoveryAddress: {addr},{port}")
                _print_discovered([r for _, r in recs
                                   if r["node.discovery_type"] == "send_targets"
                                   and r["node.discovery_address"] == addr
                                   and int(r["node.discovery_port"]) == port], out)
                found += 1
            out.p("iSNS:")
            out.p("No targets found.")
            out.p("STATIC:")
            static = [r for _, r in recs if r["node.discovery_type"] == "static"]
            if not static:
                out.p("No targets found.")
            _print_discovered(static, out)
            found += len(static)
            out.p("FIRMWARE:")
            out.p("No targets found.")
        if not found:
            return ERR_NO_OBJS_FOUND
        return 0
    if mode == "discoverydb" and "update" in ops:
        if not opts.get("p"):
            raise SimError("discoverydb update requires a portal", ERR_INVAL)
        addr, port, _ = split_portal(opts["p"])
        if (addr, port) not in _st_records(sim):
            raise SimError("Discovery record [" + f"{addr},{port}] not found.", 6)
        return 0
    if mode == "discoverydb" and "new" in ops:
        addr, port, _ = split_portal(opts["p"])
        os.makedirs(os.path.join(sim.st_dir, f"{addr},{port}"), exist_ok=True)
        _write(os.path.join(sim.st_dir, f"{addr},{port}", "st_config"),
               f"discovery.sendtargets.address = {addr}\ndiscovery.sendtargets.port = {port}\n")
        out.p(f"New discovery record for [{addr},{port}] added.")
        return 0
    if discover:
        if opts.get("t") not in ("sendtargets", "st"):
            raise SimError("Invalid discovery type.", 30)
        addr, port, _ = split_portal(opts["p"])
        portal = join_portal(addr, port)
        targets = sim._load_targets()
        found = [(iqn, t) for iqn, t in sorted(targets.items()) if portal in t["portals"]]
        if not found:
            out.e(f"cannot make connection to {addr}: Connection refused")
            out.e("Could not perform SendTargets discovery: encountered connection failure")
            return ERR_TRANS
        os.makedirs(os.path.join(sim.st_dir, f"{addr},{port}"), exist_ok=True)
        _write(os.path.join(sim.st_dir, f"{addr},{port}", "st_config"),
               f"discovery.sendtargets.address = {addr}\ndiscovery.sendtargets.port = {port}\n")
        for iqn, t in found:
            for p in t["portals"]:
                a, pt, _ = split_portal(p)
                existing = [r for _, r in sim.node_records()
                            if r["node.name"] == iqn and r["node.conn[0].address"] == a
                            and int(r["node.conn[0].port"]) == pt]
                if not existing:
                    sim.node_new(p, iqn, tpgt=t["tpgt"], discovery=(addr, port))
                out.p(f"{join_portal(a, pt)},{t['tpgt']} {iqn}")
        return 0
    raise SimError("operation is not supported.", ERR_INVAL)


def _print_discovered(recs: list[dict], out: Out) -> None:
    last = None
    for rec in recs:
        if last is None or last["node.name"] != rec["node.name"]:
            out.p(f"Target: {rec['node.name']}")
            last = None
        if last is None or (last["node.conn[0].address"], last["node.conn[0].port"]) != \
                (rec["node.conn[0].address"], rec["node.conn[0].port"]):
            out.p(f"\tPortal: {join_portal(rec['node.conn[0].address'], int(rec['node.conn[0].port']))},"
                  f"{rec['node.tpgt']}")
        out.p(f"\t\tIface Name: {rec['iface.iscsi_ifacename']}")
        last = rec


def _mode_iface(opts: dict, out: Out) -> int:
    iface = opts.get("I")
    if iface in (None, "default", "iser"):
        out.p(f"# BEGIN RECORD {VERSION}")
        out.p(f"iface.iscsi_ifacename = {iface or 'default'}")
        out.p(f"iface.transport_name = {'iser' if iface == 'iser' else 'tcp'}")
        out.p("# END RECORD")
        return 0
    raise SimError(f"Could not read iface {iface} (6)", 6)


# --------------------------------------------------------------------------
# entry points of bin/iscsiadm, bin/tee, bin/blockdev
# --------------------------------------------------------------------------

def _root() -> str | None:
    return os.environ.get("ISCSI_SIM_ROOT") or None


def iscsiadm_main(argv: list[str]) -> int:
    root = _root()
    if root is None:
        sys.stderr.write("iscsiadm (simulator): ISCSI_SIM_ROOT is not set\n")
        return 1
    sim = SimHost(root)
    out = Out()
    with sim.locked():
        rc = iscsiadm(sim, argv, out)
        sim.log("iscsiadm", argv, rc)
    sys.stderr.write("".join(out.err))
    sys.stdout.write("".join(out.out))
    return rc


def _sim_path(sim: SimHost, path: str) -> str | None:
    """``path`` inside the simulated tree, or None when it is not the simulator's."""
    if path.startswith(sim.root + "/"):
        return path
    for prefix, base in (("/sys/", sim.sys), ("/dev/", sim.dev)):
        if path.startswith(prefix):
            cand = os.path.join(base, path[len(prefix):])
            if os.path.lexists(cand) or os.path.isdir(os.path.dirname(cand)):
                return cand
    return None


def tee_main(argv: list[str]) -> int:
    """tee [-a] FILE...: the kernel's side of sysfs writes into the simulated tree."""
    root = _root()
    files = [a for a in argv if not a.startswith("-")]
    sim = SimHost(root) if root else None
    mapped = [(_sim_path(sim, f) if sim else None) for f in files]
    if not files or any(m is None for m in mapped):
        os.execv("/usr/bin/tee", ["tee", *argv])
    data = sys.stdin.read()
    sys.stdout.write(data)
    rc = 0
    with sim.locked():
        for path in mapped:
            rc = max(rc, _kernel_write(sim, path, data))
        sim.log("tee", argv + ["<<", data.strip()], rc)
    return rc


def _kernel_write(sim: SimHost, path: str, data: str) -> int:
    real = os.path.realpath(path)
    base = os.path.basename(real)
    if not os.path.exists(real):
        sys.stderr.write(f"tee: {path}: No such file or directory\n")
        return 1
    if base == "delete" and re.fullmatch(r"\d+:\d+:\d+:\d+", os.path.basename(
            os.path.dirname(real))):
        if data.strip() == "1":
            bdir = os.path.join(os.path.dirname(real), "block")
            for name in os.listdir(bdir) if os.path.isdir(bdir) else ():
                sim.delete_device(name)
            _unlink(os.path.join(sim.sys, "bus", "scsi", "devices",
                                 os.path.basename(os.path.dirname(real))))
            shutil.rmtree(os.path.dirname(real), ignore_errors=True)
        return 0
    m = re.search(r"/scsi_host/host(\d+)/scan$", real)
    if m:
        parts = data.split()
        if len(parts) != 3:
            sys.stderr.write("tee: write error: Invalid argument\n")
            return 1
        sim.scan(int(m.group(1)), *parts)
        return 0
    with open(real, "a") as f:
        f.write(data)
    return 0


def blockdev_main(argv: list[str]) -> int:
    root = _root()
    sim = SimHost(root) if root else None
    devs = [a for a in argv if not a.startswith("-")]
    mapped = [(_sim_path(sim, d) if sim else None) for d in devs]
    if not devs or any(m is None for m in mapped):
        os.execv("/usr/sbin/blockdev", ["blockdev", *argv])
    rc = 0
    for dev, path in zip(devs, mapped, strict=True):
        if not os.path.isfile(path):
            sys.stderr.write(f"blockdev: cannot open {dev}: No such file or directory\n")
            rc = 1
            continue
        if "--getsize64" in argv:
            name = os.path.basename(os.path.realpath(path))
            size = _read(os.path.join(sim.sys, "block", name, "size"), "0")
            sys.stdout.write(f"{int(size) * 512}\n")
    with sim.locked():
        sim.log("blockdev", argv, rc)
    return rc
