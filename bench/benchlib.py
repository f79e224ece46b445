"""Pieces the benchmarks share: the Nova DB builder, the network host (netns + OVS),
the simulated iSCSI host, the bare dumps they are measured against, and statistics.

Imported by the bench scripts (``bench/`` is on sys.path when one of them runs);
importing it also puts the repository root on sys.path, so ``reaper`` and
``tests`` resolve to this checkout.
"""
from __future__ import annotations

import datetime
import json
import os
import random
import resource
import signal
import socket
import statistics
import struct
import subprocess
import sys
import time
import uuid as uuidlib

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

HOST = "bench-cmp-0001"
OVS_SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"
SYSTEM_OVSDB = "unix:/var/run/openvswitch/db.sock"


# --------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------

def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(best, median, last result) of ``repeat`` calls of ``fn``."""
    times, out = [], None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), statistics.median(times), out


def spread(values) -> dict:
    """Median, min and max of a sample (the machines are shared: never one figure)."""
    values = list(values)
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


def peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def sh(*cmd, check=True, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])}... failed: {r.stderr.strip()[:500]}")
    return r


# --------------------------------------------------------------------------
# Nova DB
# --------------------------------------------------------------------------

def create_db(db_base: str | None, root: str, tag: str) -> tuple[str, str | None]:
    """(URL, MariaDB database name or None): a database of its own for one run,
    on ``db_base`` (a server URL without database) or a SQLite file under ``root``."""
    import sqlalchemy as sa

    if not db_base:
        return f"sqlite:///{os.path.join(root, 'nova.sqlite')}", None
    name = f"reaper_bench_{tag}_{os.getpid()}"
    admin = sa.create_engine(db_base)
    with admin.begin() as c:
        c.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        c.execute(sa.text(f"CREATE DATABASE {name}"))
    admin.dispose()
    return db_base.rstrip("/") + "/" + name, name


def drop_db(db_base: str | None, name: str | None) -> None:
    if not (db_base and name):
        return
    import sqlalchemy as sa
    admin = sa.create_engine(db_base)
    with admin.begin() as c:
        c.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
    admin.dispose()


def fill_nova_db(url: str, local: list[str], others_per_local: int = 100, seed: int = 0,
                 host: str = HOST, fill=None) -> None:
    """Nova's schema with a compute node for ``host``, one live row per ``local``
    uuid on it and ``others_per_local`` rows of other hosts per local row;
    ``fill(conn, now)`` adds more (BDMs, info caches) in the same transaction."""
    import sqlalchemy as sa

    from reaper.nova import schema

    engine = sa.create_engine(url)
    schema.create_all(engine)
    rng = random.Random(seed)
    n = len(local)
    now = datetime.datetime.utcnow().replace(microsecond=0)
    with engine.begin() as c:
        c.execute(schema.compute_nodes.insert(), [dict(
            host=host, hypervisor_hostname=host, uuid=str(uuidlib.uuid4()), vcpus=64,
            memory_mb=1, local_gb=1, vcpus_used=0, memory_mb_used=0, local_gb_used=0,
            hypervisor_type="QEMU", hypervisor_version=1, cpu_info="{}", deleted=0)])
        c.execute(schema.instances.insert(), [dict(
            id=i + 1, uuid=u, host=host, node=host, vm_state="active", power_state=1,
            deleted=0, created_at=now, display_name=f"vm{i}") for i, u in enumerate(local)])
        batch = []
        for j in range(others_per_local * n):
            batch.append(dict(id=n + j + 1, uuid=str(uuidlib.UUID(int=rng.getrandbits(128),
                                                                    version=4)),
                              host=f"other-{j % 997:04d}", node="x", vm_state="active",
                              power_state=1, deleted=0, created_at=now))
            if len(batch) == 20000:
                c.execute(schema.instances.insert(), batch)
                batch = []
        if batch:
            c.execute(schema.instances.insert(), batch)
        if fill is not None:
            fill(c, now)
    engine.dispose()


def bare_db_rows(engine, host: str, uuids, with_dependents: bool = False) -> int:
    """The rows any reconciler must read at least: this host's instances (and the
    locally seen uuids), plus, with ``with_dependents``, their BDMs and network info
    caches; plain selects of the same columns the view reads."""
    import sqlalchemy as sa

    from reaper.nova import schema
    t = schema.instances
    cols = [t.c.id, t.c.uuid, t.c.host, t.c.node, t.c.vm_state, t.c.task_state,
            t.c.power_state, t.c.deleted, t.c.deleted_at]
    n = 0
    with engine.connect() as c:
        n += len(c.execute(sa.select(*cols).where(sa.or_(
            sa.and_(t.c.host == host, t.c.deleted == 0),
            t.c.uuid.in_(sa.bindparam("u", expanding=True)))), {"u": list(uuids)}).fetchall())
        if with_dependents:
            ours = sa.select(t.c.uuid).where(t.c.host == host, t.c.deleted == 0)
            b = schema.block_device_mapping
            n += len(c.execute(sa.select(
                b.c.id, b.c.instance_uuid, b.c.volume_id, b.c.source_type,
                b.c.destination_type, b.c.device_name, b.c.delete_on_termination,
                b.c.connection_info, b.c.attachment_id).where(
                    b.c.instance_uuid.in_(ours), b.c.deleted == 0)).fetchall())
            ic = schema.instance_info_caches
            n += len(c.execute(sa.select(ic.c.id, ic.c.instance_uuid, ic.c.network_info).where(
                ic.c.instance_uuid.in_(ours), ic.c.deleted == 0)).fetchall())
    return n


# --------------------------------------------------------------------------
# network: hybrid-plugged VIFs in a namespace, their ports on a bench-only bridge
# --------------------------------------------------------------------------

def port_id(i: int) -> str:
    return f"{0xbe000000 + i:08x}-{i % 256:02x}{i % 97:02x}-4000-8000-{i:012x}"


def vm_uuid(i: int) -> str:
    return f"{i:08x}-aaaa-4bbb-8ccc-{i:012x}"


class NetHost:
    """``n`` hybrid VIFs (qbr bridge, qvb/qvo veth pair, tap: 4 devices each) in a
    network namespace of the run's own, and ``n`` ports with iface-id/vm-uuid on a
    bench-only integration bridge, on a private ovsdb-server (``ovsdb="private"``)
    or the host's (``"system"``). ``destroy`` removes all of it."""

    def __init__(self, n: int, ovsdb: str, workdir: str):
        self.n = n
        self.ns = f"reaper-bench-{uuidlib.uuid4().hex[:6]}"
        self.bridge = f"br-bench-{uuidlib.uuid4().hex[:4]}"
        self.workdir = workdir
        self.private = ovsdb == "private"
        self.remote = SYSTEM_OVSDB
        self.pidfile = os.path.join(workdir, "ovsdb-server.pid")
        self.build_s = 0.0

    def build(self) -> None:
        t = time.perf_counter()
        sh("ip", "netns", "add", self.ns)
        batch = os.path.join(self.workdir, "links.batch")
        with open(batch, "w") as f:
            for i in range(self.n):
                p = port_id(i)[:11]
                f.write(f"link add qbr{p} type bridge\n"
                        f"link add qvb{p} type veth peer name qvo{p}\n"
                        f"link set qvb{p} master qbr{p}\n"
                        f"tuntap add tap{p} mode tap\n"
                        f"link set tap{p} master qbr{p}\n")
        sh("ip", "-n", self.ns, "-batch", batch)
        if self.private:
            db = os.path.join(self.workdir, "conf.db")
            sock = os.path.join(self.workdir, "db.sock")
            sh("ovsdb-tool", "create", db, OVS_SCHEMA)
            sh("ovsdb-server", db, f"--remote=punix:{sock}", f"--pidfile={self.pidfile}",
               f"--unixctl={os.path.join(self.workdir, 'ovsdb.ctl')}", "--detach",
               "--no-chdir", "-vconsole:off",
               f"--log-file={os.path.join(self.workdir, 'ovsdb.log')}")
            self.remote = f"unix:{sock}"
            for _ in range(200):
                if sh("ovs-vsctl", f"--db={self.remote}", "--no-wait", "init",
                      check=False).returncode == 0:
                    break
                time.sleep(0.05)
        args = ["ovs-vsctl", f"--db={self.remote}", "--no-wait", "--", "add-br", self.bridge,
                "--", "set", "bridge", self.bridge, "datapath_type=netdev"]
        for i in range(self.n):
            name = "qvo" + port_id(i)[:11]
            args += ["--", "add-port", self.bridge, name, "--", "set", "Interface", name,
                     f"external_ids:iface-id={port_id(i)}", "external_ids:iface-status=active",
                     "external_ids:attached-mac=fa:16:3e:00:00:01",
                     f"external_ids:vm-uuid={vm_uuid(i)}"]
        sh(*args)
        self.build_s = time.perf_counter() - t

    def destroy(self) -> None:
        sh("ip", "netns", "del", self.ns, check=False)
        if self.private:
            try:
                with open(self.pidfile) as f:
                    os.kill(int(f.read().strip()), signal.SIGTERM)
            except (OSError, ValueError):
                pass
        else:
            sh("ovs-vsctl", f"--db={self.remote}", "--if-exists", "del-br", self.bridge,
               check=False)
            sh("ip", "link", "del", self.bridge, check=False)

    @property
    def unix_path(self) -> str:
        return self.remote.split(":", 1)[1]


def raw_netlink_dump(sock: socket.socket) -> int:
    """RTM_GETLINK dump (statistics skipped, as the collector asks): messages counted."""
    body = struct.pack("=BxHiII", 0, 0, 0, 0, 0) + struct.pack("=HHI", 8, 29, 1 << 3)
    sock.send(struct.pack("=IHHII", 16 + len(body), 18, 0x301, 1, 0) + body)
    buf, n = bytearray(1 << 20), 0
    while True:
        size = sock.recv_into(buf)
        off = 0
        while off < size:
            length, typ = struct.unpack_from("=IH", buf, off)
            if typ == 3:                    # NLMSG_DONE
                return n
            n += 1
            off += (length + 3) & ~3


def select_request(bridge: str) -> list:
    """One OVSDB transact selecting the columns the collector reads."""
    return ["Open_vSwitch",
            {"op": "select", "table": "Bridge", "where": [["name", "==", bridge]],
             "columns": ["name", "ports", "datapath_type"]},
            {"op": "select", "table": "Port", "where": [],
             "columns": ["_uuid", "name", "interfaces", "external_ids"]},
            {"op": "select", "table": "Interface", "where": [],
             "columns": ["_uuid", "name", "type", "external_ids", "error", "ofport"]}]


def raw_ovsdb_dump(path: str, bridge: str) -> int:
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    try:
        s.sendall(json.dumps({"id": 1, "method": "transact",
                              "params": select_request(bridge)}).encode())
        chunks, dec = [], json.JSONDecoder()
        while True:
            chunk = s.recv(1 << 20)
            if not chunk:
                raise RuntimeError("OVSDB closed the connection")
            chunks.append(chunk)
            if chunk.rstrip().endswith(b"}"):
                try:
                    obj, _ = dec.raw_decode(b"".join(chunks).decode())
                    return len(obj["result"][2]["rows"])
                except ValueError:
                    continue
    finally:
        s.close()


def pyovs_dump(remote: str, bridge: str) -> int:
    """The bare OVSDB dump: one transact through python-ovs' JSON-RPC."""
    import ovs.jsonrpc

    from reaper.kinds.network import ovs as ovs_inv
    res = ovs_inv.transact(remote, ovs.jsonrpc.Message.create_request(
        "transact", select_request(bridge)), 30)
    return len(res[2]["rows"])


# --------------------------------------------------------------------------
# iSCSI: the simulated initiator (tests/iscsi_sim)
# --------------------------------------------------------------------------

def iscsi_portals() -> list[str]:
    return [f"10.{i // 250}.{i % 250}.1:3260" for i in range(8)]


def iscsi_iqn(i: int) -> str:
    return f"iqn.2010-10.org.openstack:volume-{i:05d}"


def build_iscsi_sim(root: str, n_sessions: int, n_luns: int):
    """A simulated initiator host with ``n_sessions`` sessions of ``n_luns`` LUNs, one
    node record each; session i is to ``iscsi_iqn(i)`` on portal i mod 8."""
    from tests import iscsi_sim

    sim = iscsi_sim.SimHost(root).init()
    portals = iscsi_portals()
    for i in range(n_sessions):
        sim.add_target(iscsi_iqn(i), [portals[i % len(portals)]], list(range(n_luns)))
        sim.connect(portals[i % len(portals)], iscsi_iqn(i))
    return sim
