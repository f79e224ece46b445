"""A throwaway compute host for the fault matrix, and reaper-manage passes run on it as
separate processes (so that a pass can be SIGKILLed and the next one find what it left).

``FmHost`` is one host: a name of its own (``fm-<hex>``), a config file, a Nova DB
(SQLite file, or a MariaDB database), a state DB under ``state/``, an audit log, an
iSCSI simulator root (``iscsi/``), all under the test's tmp dir; and, shared with the
other scenarios of its module (``Services``), an instances_path, a network namespace
for its VIF devices and an OVS integration bridge for their ports. Its domains are
real KVM/QEMU domains in libvirtd (``qemu:///system``: libvirt state must outlive
the killed process, which the in-process test driver does not), named
``fm-<hex>-<role>``. Every pass runs through ``killer.py`` in a private mount
namespace where the simulator's /sys, /dev and /etc/iscsi stand for the host's
(tests/iscsi_sim).

The builders (``bystander``, ``evacuated``, ``evacuating``, ``running_deleted``,
``reclaimable``, ``orphan_dir``, ``stale_resize``, ``interrupted_delete``,
``leaked_vif``, ``leaked_iscsi``) each make one *role*: the Nova rows, directories,
domain, VIF and iSCSI pieces of one situation, labelled with the role's name.
``snapshot()`` reads the whole host back with those labels in place of uuids, port
ids and IQNs, so two hosts built the same way compare equal, and ``without(snapshot,
role)`` is what an uninterrupted teardown of that role leaves (``powered_off(snapshot,
role)`` for the kinds in ``POWER_OFF_KINDS``, whose teardown only stops the guest).

Typical use (the fixture ``fm_host`` gives the host)::

    fm_host.bystander()                     # a live instance that must survive
    fm_host.build("orphan_dir")
    before = fm_host.snapshot()
    assert fm_host.run("reap", kill_after="delete_files").killed
    p = fm_host.run("reap")                 # harness.Pass: rc, report, stderr
    fm_host.assert_torn_down(before, "orphan_dir")

``start``/``wait_held``/``release``/``finish`` run a pass held at a point
(``hold_before_act=True``, ``hold_after="claim"``...) for races and concurrent
passes.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import os
import pathlib
import shutil
import subprocess
import sys
import time
import uuid as uuidlib

import sqlalchemy as sa

from reaper.nova import schema
from tests import iscsi_sim
from tests.conftest import InstancesPath
from tests.fixtures import netplumb as npl
from tests.fixtures import novadb

REPO = str(pathlib.Path(__file__).resolve().parents[3])
OTHER = "fm-other-host"
OLD = datetime.timedelta(days=2)
# TEST-NET-1 portals of the simulated arrays: the live volume's, the leaked one's.
PORTAL_LIVE, PORTAL_LEAK = "192.0.2.30:3260", "192.0.2.31:3260"
PASS_TIMEOUT = 180
# Pass modes whose report is JSON on stdout.
PASS_MODES = ("audit", "reap", "reclaim")

# The steps of each teardown kind the matrix drives, in the executor's order.
KIND_STEPS: dict[str, tuple[str, ...]] = {
    "evacuated": ("destroy_domain", "unplug_vifs", "delete_files", "undefine_domain"),
    "evacuating": ("power_off",),
    "running_deleted": ("destroy_domain", "unplug_vifs", "delete_files", "undefine_domain"),
    "reclaimable": ("claim", "destroy_domain", "unplug_vifs", "delete_files",
                    "undefine_domain", "finalize_db"),
    "orphan_dir": ("delete_files",),
    "stale_resize": ("delete_files",),
    "interrupted_delete": ("delete_files",),
    "leaked_vif": ("unplug_vifs",),
    "leaked_iscsi": ("disconnect_volumes",),
}
# Kinds whose teardown only powers the guest off and keeps everything else (see
# ``powered_off``); a pass after it still reports them, as LEFT_FINDINGS says.
POWER_OFF_KINDS = frozenset({"evacuating"})
# (classification, action, result) of the findings of its own a pass still reports
# after a kind's teardown: an evacuating guest stays reported until the evacuation
# is done (then the evacuated teardown follows) or failed.
LEFT_FINDINGS: dict[str, list[tuple[str, str, str]]] = {
    "evacuating": [("evacuating", "shutdown", "logged")],
}


def iqn(tag: str) -> str:
    return f"iqn.2010-10.org.openstack:volume-{tag}"


@dataclasses.dataclass
class Role:
    """One situation built on the host: its uuid and whatever else it holds."""
    name: str
    uuid: str
    domain: str | None = None           # libvirt domain name
    port: str | None = None             # Neutron port id of its VIF
    iqn: str | None = None              # iSCSI target
    dirs: tuple[str, ...] = ()
    migration: int | None = None        # id of a migration row snapshot() reads back


@dataclasses.dataclass
class Pass:
    """One finished reaper process."""
    argv: list[str]
    rc: int
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        return self.rc == -9

    @property
    def report(self) -> dict | None:
        try:
            return json.loads(self.stdout)
        except ValueError:
            return None

    def actions(self) -> list[tuple[str, str]]:
        """(classification, result) of every action of the report."""
        return [(a["classification"], a["result"]) for a in (self.report or {}).get(
            "actions", [])]

    def __str__(self) -> str:
        return (f"rc {self.rc}\n--- stdout\n{self.stdout[-4000:]}\n"
                f"--- stderr\n{self.stderr[-4000:]}")


class BystanderGuest:
    """The live instance's running guest, shared by the scenarios of a module (a guest
    takes ~1.5 s to start and destroy): a paused KVM domain whose disk and volume files
    live in its directory under the module's instances_path. ``ensure`` rebuilds it
    if a scenario did touch it (that scenario fails; the next ones start clean)."""

    def __init__(self, factory, instances: InstancesPath, suffix: str):
        self.factory = factory
        self.instances = instances
        self.uuid = novadb.new_uuid()
        self.volume_id = novadb.new_uuid()
        self.name = f"fm-{suffix}-bystander"

    @property
    def dir(self) -> pathlib.Path:
        return self.instances.path / self.uuid

    def ensure(self) -> None:
        import libvirt
        libvirt.registerErrorHandler(lambda *_: None, None)
        try:
            dom = self.factory.conn.lookupByUUIDString(self.uuid)
            whole = (dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
                     and (self.dir / "disk").is_file() and (self.dir / "volume").is_file())
        except libvirt.libvirtError:
            dom, whole = None, False
        if whole:
            return
        self.factory.cleanup()
        self.factory.created.clear()
        shutil.rmtree(self.dir, ignore_errors=True)
        d = self.instances.make_dir(self.uuid, files={"volume": b"\0" * 4096})
        self.factory(self.uuid, self.name, start=True, paused=True, disks=[
            d / "disk", {"path": d / "volume", "serial": self.volume_id, "target": "vdb"}])


@dataclasses.dataclass
class Services:
    """What the scenarios of one module share: a network namespace, an OVS bridge,
    the instances_path directory and the live instance's guest in it."""
    netns: str
    bridge: str
    instances: InstancesPath
    guest: BystanderGuest

    def reset(self) -> None:
        """Remove what a scenario left: devices, OVS ports, directories but the guest's."""
        for name in npl.links(self.netns) - {"lo"}:
            npl.ip(self.netns, "link", "del", name, check=False)
        for port in npl.ovs_ports(self.bridge):
            npl.vsctl("--if-exists", "del-port", self.bridge, port, check=False)
        for name in os.listdir(self.instances.path):
            if name != self.guest.uuid:
                p = self.instances.path / name
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()


@dataclasses.dataclass
class NovaDB:
    kind: str                           # "sqlite" or "mariadb"
    url: str
    engine: sa.Engine


class FmHost:
    """One throwaway compute host (see the module docstring)."""

    def __init__(self, tmp: pathlib.Path, services: Services, db: NovaDB, factory,
                 sim: iscsi_sim.SimHost):
        self.suffix = uuidlib.uuid4().hex[:8]
        self.name = f"fm-{self.suffix}"
        self.tmp = tmp
        self.services = services
        self.db = db
        self.factory = factory
        self.sim = sim
        self.instances = services.instances
        self.state_path = tmp / "state"
        self.audit_log = tmp / "audit.log"
        self.conf_path = tmp / "reaper.conf"
        self.roles: dict[str, Role] = {}
        self._labels: dict[str, str] = {}
        self._procs: list[subprocess.Popen] = []
        novadb.add_compute_node(db.engine, self.name)
        self.write_conf()

    # -- configuration and passes ---------------------------------------------

    def write_conf(self, **reaper_opts) -> str:
        """The host's reaper.conf: one pass acts on what it sees (grace 1/0, no
        mass-destruction limit), every kind reaps; ``reaper_opts`` override [reaper]."""
        opts = dict(grace_observations=1, grace_seconds=0, max_destroy_fraction=1.0,
                    max_destroy_per_pass=20, instances_path_shared="false",
                    running_deleted_timeout=0, reclaim_instance_interval=3600,
                    leaked_vif_action="reap", leaked_iscsi_action="reap",
                    libvirt_retry_wait=0.1, audit_log=self.audit_log)
        opts.update(reaper_opts)
        self.conf_path.write_text(
            f"[DEFAULT]\nhost = {self.name}\nhypervisor_hostname = {self.name}\n"
            f"instances_path = {self.instances.path}\nstate_path = {self.state_path}\n"
            f"compute_id_file = {self.tmp / 'compute_id'}\n"
            f"use_stderr = true\ndebug = false\n"
            f"[database]\nconnection = {self.db.url}\n"
            f"[libvirt]\nconnection_uri = qemu:///system\n"
            f"[network]\nenabled = true\nnamespace = {self.services.netns}\n"
            f"[ovs]\nconnection = {npl.OVS_DB}\nintegration_bridge = {self.services.bridge}\n"
            f"timeout = 10\n"
            f"[os_brick]\nlock_path = {self.tmp / 'locks'}\n"
            f"[reaper]\n" + "".join(f"{k} = {v}\n" for k, v in opts.items()))
        return str(self.conf_path)

    def argv(self, *args: str, program: str = "manage", **fault) -> list[str]:
        """The command line of a pass: ``args`` are reaper-manage's after the config
        file (``"reap"``), ``fault`` the launcher's options (``kill_after="claim"``,
        ``hold_before_act=True``, ``read_only=[path]``...)."""
        opts = []
        for key, value in fault.items():
            flag = "--" + key.replace("_", "-")
            if value is True:
                opts.append(flag)
            elif isinstance(value, (list, tuple)):
                for v in value:
                    opts += [flag, str(v)]
            elif value not in (None, False):
                opts += [flag, str(value)]
        if program != "manage":
            opts += ["--program", program]
        tail = ["--format", "json"] if args and args[0] in PASS_MODES else []
        cmd = [sys.executable, "-m", "tests.functional.faultmatrix.killer", *opts, "--",
               "--config-file", str(self.conf_path), *args, *tail]
        return iscsi_sim.ns_argv(self.sim.root, cmd)

    def env(self) -> dict:
        return iscsi_sim.env(self.sim.root, dict(os.environ, PYTHONPATH=REPO))

    def run(self, *args: str, timeout: float = PASS_TIMEOUT, **fault) -> Pass:
        """One pass, to its end (or its kill)."""
        argv = self.argv(*args, **fault)
        r = subprocess.run(argv, capture_output=True, text=True, env=self.env(),
                           timeout=timeout, cwd=REPO)
        return Pass(argv, r.returncode, r.stdout, r.stderr)

    def start(self, *args: str, **fault) -> subprocess.Popen:
        """A pass in the background (``finish`` collects it); for holds and races."""
        p = subprocess.Popen(self.argv(*args, **fault), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=self.env(), cwd=REPO)
        self._procs.append(p)
        return p

    @staticmethod
    def finish(p: subprocess.Popen, timeout: float = PASS_TIMEOUT) -> Pass:
        out, err = p.communicate(timeout=timeout)
        return Pass(list(p.args), p.returncode, out, err)

    def hold_dir(self, name: str = "hold") -> pathlib.Path:
        d = self.tmp / name
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        return d

    @staticmethod
    def wait_held(p: subprocess.Popen, hold_dir: pathlib.Path, timeout: float = 120) -> str:
        """Wait until the pass stops at its hold point; returns the point's name."""
        deadline = time.monotonic() + timeout
        held = hold_dir / "held"
        while not held.exists():
            if p.poll() is not None:
                out, err = p.communicate()
                raise AssertionError(f"the pass ended (rc {p.returncode}) before its hold "
                                     f"point:\n{out[-3000:]}\n{err[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("the pass never reached its hold point")
            time.sleep(0.02)
        return held.read_text().split("\n", 1)[0]

    @staticmethod
    def release(hold_dir: pathlib.Path) -> None:
        (hold_dir / "release").touch()

    @property
    def state_db(self) -> pathlib.Path:
        return self.state_path / "reaper-state.sqlite"

    def state_files(self) -> dict[str, bytes]:
        """The state DB's files (main, -wal, -shm) and their bytes."""
        return {n: (self.state_path / n).read_bytes() for n in sorted(os.listdir(
            self.state_path)) if n.startswith("reaper-state.sqlite")}

    def checkpoint_state(self) -> None:
        """Move everything the -wal holds into the main file and remove the -wal and
        -shm, as the last process to close the state DB does."""
        import sqlite3
        c = sqlite3.connect(self.state_db)
        try:
            c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            c.close()
        assert set(self.state_files()) == {"reaper-state.sqlite"}, self.state_files().keys()

    def journal(self) -> list:
        """The journal's unfinished entries (reaper.state.JournalEntry)."""
        from reaper import state as state_mod
        st = state_mod.StateDB(str(self.state_path))
        try:
            return st.unfinished()
        finally:
            st.close()

    def own(self, records) -> list[dict]:
        """The report/audit records that name something of this host's roles (other
        tests' domains on the shared libvirtd show up as "unknown" findings)."""
        raw = list(self._labels)
        return [r for r in records
                if any(x in f"{r.get('instance_uuid') or ''} {r.get('resource') or ''}"
                       for x in raw)]

    def assert_torn_down(self, before: dict, kind: str) -> None:
        """The host is ``before`` without role ``kind`` (a reclaimed row finalized),
        and the journal holds no unfinished entry. For a kind of POWER_OFF_KINDS,
        ``assert_powered_off``."""
        if kind in POWER_OFF_KINDS:
            return self.assert_powered_off(before, kind)
        row = "changed" if kind == "reclaimable" else "same"
        assert comparable(self.snapshot(), kind, row=row) == without(before, kind, row=row)
        if kind == "reclaimable":
            assert_reclaimed(self.row(self.roles[kind]))
        assert self.journal() == []

    def assert_powered_off(self, before: dict, role: str) -> None:
        """The host is ``before`` with role ``role``'s guest shut off and still
        defined, its directory, VIF devices, OVS port, row and migration as they were,
        everything else untouched; the journal holds no unfinished entry."""
        assert before["domains"].get(role) in ("running", "paused"), before
        assert self.snapshot() == powered_off(before, role)
        assert self.journal() == []

    def audit(self) -> list[dict]:
        p = self.audit_log
        return [json.loads(x) for x in p.read_text().splitlines()] if p.exists() else []

    def close(self) -> None:
        """Stop any pass still running and remove what the scenario left on the shared
        parts (the domains go with the KVM factory, the rest with tmp_path)."""
        for p in self._procs:
            if p.poll() is None:
                p.kill()
                p.communicate(timeout=30)
        self.services.reset()

    # -- building roles --------------------------------------------------------

    def _role(self, name: str, uuid: str | None = None, **kw) -> Role:
        if name in self.roles:
            raise ValueError(f"role {name} already built")
        r = Role(name, uuid or novadb.new_uuid(), **kw)
        self.roles[name] = r
        self._labels[r.uuid] = name
        return r

    def _domain(self, r: Role, *, start: bool, disks=(), **kw) -> None:
        r.domain = f"fm-{self.suffix}-{r.name.replace('_', '-')}"
        self.factory(r.uuid, r.domain, start=start, paused=True, disks=disks, **kw)

    def _vif(self, r: Role, network_info: bool = True) -> None:
        r.port = npl.new_port_id(uuidlib.uuid4().hex[:4])
        self._labels[r.port[:11]] = r.name
        if network_info:
            novadb.add_info_cache(self.db.engine, r.uuid, [npl.vif(r.port)])
        npl.hybrid_plug(self.services.netns, self.services.bridge, r.port, r.uuid)

    def _iscsi(self, r: Role, portal: str) -> str:
        r.iqn = iqn(f"{r.name.replace('_', '-')}-{self.suffix}")
        self._labels[r.iqn] = r.name
        self.sim.add_target(r.iqn, [portal], [0])
        self.sim.connect(portal, r.iqn)
        return r.iqn

    def _dir(self, r: Role, suffix: str = "") -> pathlib.Path:
        d = self.instances.make_dir(r.uuid + suffix)
        r.dirs += (d.name,)
        return d

    def bystander(self, name: str = "bystander") -> Role:
        """A live instance of this host: a running (paused) guest on its disk in its
        directory (the module's shared guest), a hybrid-plugged VIF its network_info
        claims, an iSCSI volume (session + BDM; the domain names the volume by its
        serial)."""
        eng, guest = self.db.engine, self.services.guest
        guest.ensure()
        r = self._role(name, guest.uuid, domain=guest.name, dirs=(guest.uuid,))
        novadb.add_instance(eng, r.uuid, host=self.name)
        target = self._iscsi(r, PORTAL_LIVE)
        novadb.add_bdm(eng, r.uuid, guest.volume_id, connection_info=novadb.iscsi_connection_info(
            guest.volume_id, target_portal=PORTAL_LIVE, target_iqn=target, target_lun=0))
        self._vif(r)
        return r

    def evacuated(self, name: str = "evacuated") -> Role:
        """Evacuated from this host (migration 'done'), its guest still running here
        with its directory and VIF."""
        r = self._role(name)
        novadb.add_instance(self.db.engine, r.uuid, host=OTHER)
        novadb.add_migration(self.db.engine, r.uuid, self.name, OTHER, "done", "evacuation")
        d = self._dir(r)
        self._vif(r)
        self._domain(r, start=True, disks=[d / "disk"])
        return r

    def evacuating(self, name: str = "evacuating", status: str = "accepted",
                   row_on: str = "source") -> Role:
        """Being evacuated from this host (migration ``status``, 'accepted' or
        'pre-migrating'; the instance rebuilding, its row still on this host with
        ``row_on="source"`` or already on the destination with ``"dest"``), its guest
        still running here with its directory and VIF. Its migration is snapshotted."""
        r = self._role(name)
        novadb.add_instance(self.db.engine, r.uuid,
                            host=self.name if row_on == "source" else OTHER,
                            task_state="rebuilding")
        r.migration = novadb.add_migration(self.db.engine, r.uuid, self.name, OTHER,
                                           status, "evacuation")["id"]
        d = self._dir(r)
        self._vif(r)
        self._domain(r, start=True, disks=[d / "disk"])
        return r

    def finish_evacuation(self, r: Role, status: str = "done") -> None:
        """Nova ends the evacuation of ``r`` on the destination: the migration gets
        ``status`` and (when 'done') the row moves there, rebuilt (task_state NULL)."""
        with self.db.engine.begin() as c:
            c.execute(sa.update(schema.migrations)
                      .where(schema.migrations.c.id == r.migration).values(status=status))
            if status == "done":
                c.execute(sa.update(schema.instances)
                          .where(schema.instances.c.uuid == r.uuid)
                          .values(host=OTHER, node=OTHER, task_state=None))

    def migration_row(self, r: Role) -> dict | None:
        with self.db.engine.connect() as c:
            m = c.execute(sa.select(schema.migrations)
                          .where(schema.migrations.c.id == r.migration)).mappings().first()
        return None if m is None else dict(m)

    def running_deleted(self, name: str = "running_deleted") -> Role:
        """Deleted in Nova two days ago, its guest still running here with its
        directory and VIF (the OVS port's vm-uuid names it)."""
        r = self._role(name)
        novadb.add_instance(self.db.engine, r.uuid, host=self.name, deleted=True,
                            deleted_at=novadb.utcnow() - OLD)
        d = self._dir(r)
        self._vif(r, network_info=False)
        self._domain(r, start=True, disks=[d / "disk"])
        return r

    def reclaimable(self, name: str = "reclaimable") -> Role:
        """Soft-deleted two days ago (reclaim_instance_interval 1 h), its guest shut
        off, directory, VIF, and a row in every dependent table."""
        eng = self.db.engine
        r = self._role(name)
        novadb.add_instance(eng, r.uuid, host=self.name, vm_state="soft-delete",
                            power_state=4, deleted_at=novadb.utcnow() - OLD)
        self._vif(r)
        novadb.add_dependents(eng, r.uuid)
        d = self._dir(r)
        self._domain(r, start=False, disks=[d / "disk"])
        return r

    def orphan_dir(self, name: str = "orphan_dir", alive_on: str | None = None) -> Role:
        """The directory of an instance deleted two days ago; nothing else left. With
        ``alive_on``, the instance lives on that host instead (a move away left it)."""
        r = self._role(name)
        if alive_on:
            novadb.add_instance(self.db.engine, r.uuid, host=alive_on)
        else:
            novadb.add_instance(self.db.engine, r.uuid, host=self.name, deleted=True,
                                deleted_at=novadb.utcnow() - OLD)
        self._dir(r)
        return r

    def stale_resize(self, name: str = "stale_resize") -> Role:
        """A ``<uuid>_resize`` directory of an instance resized to another host, the
        resize confirmed long ago."""
        r = self._role(name)
        novadb.add_instance(self.db.engine, r.uuid, host=OTHER)
        novadb.add_migration(self.db.engine, r.uuid, self.name, OTHER, "confirmed", "resize")
        self._dir(r, "_resize")
        return r

    def interrupted_delete(self, name: str = "interrupted_delete") -> Role:
        """A ``<uuid>_del`` directory an interrupted delete left."""
        r = self._role(name)
        novadb.add_instance(self.db.engine, r.uuid, host=self.name, deleted=True,
                            deleted_at=novadb.utcnow() - OLD)
        self._dir(r, "_del")
        return r

    def leaked_vif(self, name: str = "leaked_vif", alive_on: str | None = None) -> Role:
        """A hybrid-plugged VIF (qbr, qvb/qvo, tap, OVS port with iface-id) of an
        instance deleted two days ago; no domain, no directory. With ``alive_on``, the
        instance lives on that host and its network_info names the port (a move away
        left the plumbing here)."""
        r = self._role(name)
        if alive_on:
            novadb.add_instance(self.db.engine, r.uuid, host=alive_on)
        else:
            novadb.add_instance(self.db.engine, r.uuid, host=self.name, deleted=True,
                                deleted_at=novadb.utcnow() - OLD)
        self._vif(r, network_info=bool(alive_on))
        return r

    def leaked_iscsi(self, name: str = "leaked_iscsi") -> Role:
        """An iSCSI session (one LUN, node record) no BDM names."""
        r = self._role(name, uuid=f"iscsi-{self.suffix}")
        self._iscsi(r, PORTAL_LEAK)
        return r

    def build(self, kind: str, name: str | None = None, **kw) -> Role:
        """The role of teardown kind ``kind`` (a KIND_STEPS key)."""
        return getattr(self, kind)(name or kind, **kw)

    # -- reading the host back --------------------------------------------------

    def label(self, text: str) -> str:
        for raw, name in self._labels.items():
            text = text.replace(raw, name)
        return text

    def domain_state(self, r: Role) -> str | None:
        """running / paused / shutoff..., None when libvirt does not know it."""
        import libvirt
        libvirt.registerErrorHandler(lambda *_: None, None)    # no "not found" on stderr
        try:
            dom = self.factory.conn.lookupByUUIDString(r.uuid)
        except libvirt.libvirtError:
            return None
        state = dom.state()[0]
        return {libvirt.VIR_DOMAIN_RUNNING: "running", libvirt.VIR_DOMAIN_PAUSED: "paused",
                libvirt.VIR_DOMAIN_SHUTOFF: "shutoff"}.get(state, f"state {state}")

    def row(self, r: Role) -> dict | None:
        return novadb.get_instance(self.db.engine, r.uuid)

    def snapshot(self) -> dict:
        """Everything a pass may change, labelled by role (see the module docstring)."""
        snap: dict = {"domains": {}, "rows": {}}
        for r in self.roles.values():
            state = self.domain_state(r) if r.domain else None
            if state is not None:
                snap["domains"][r.name] = state
            row = self.row(r)
            if row is not None:
                snap["rows"][r.name] = _plain(row)
            if r.migration is not None:
                mig = self.migration_row(r)
                snap.setdefault("migrations", {})[r.name] = None if mig is None else _plain(mig)
        snap["dirs"] = sorted(self.label(n) for n in os.listdir(self.instances.path))
        snap["devices"] = sorted(self.label(n) for n in npl.links(self.services.netns)
                                 - {"lo"})
        snap["ovs_ports"] = sorted(self.label(n) for n in npl.ovs_ports(self.services.bridge))
        sessions = self.sim.sessions()
        snap["iscsi_sessions"] = sorted(
            f"{s['address']}:{s['port']} {self.label(s['iqn'])}" for s in sessions)
        snap["iscsi_nodes"] = sorted(
            f"{rec['node.conn[0].address']}:{rec['node.conn[0].port']} "
            f"{self.label(rec['node.name'])}" for _, rec in self.sim.node_records())
        snap["iscsi_luns"] = sorted(f"{self.label(s['iqn'])} lun {lun}"
                                    for s in sessions for lun in self.sim.devices(s["sid"]))
        return snap


# ------------------------------------------------------------------------------
# expected end states
# ------------------------------------------------------------------------------

# What a finished reclaim leaves of the row (Nova's soft delete); the rest of the row
# (timestamps, deleted = id) is checked by ``assert_reclaimed``.
RECLAIMED = {"vm_state": "deleted", "task_state": None, "power_state": 0}


def without(snap: dict, role: str, *, row: str = "same") -> dict:
    """``snap`` with everything of ``role`` gone: its domain, directories, devices,
    OVS ports, iSCSI sessions, node records and LUNs. Its Nova row stays as it was
    (``row="same"``) or is left out of the comparison (``row="changed"``: a reclaim
    finalizes it; check it on its own)."""
    out = json.loads(json.dumps(snap))
    out["domains"].pop(role, None)
    if row == "changed":
        out["rows"].pop(role, None)
        out.get("migrations", {}).pop(role, None)
    for key in ("dirs", "devices", "ovs_ports", "iscsi_sessions", "iscsi_nodes",
                "iscsi_luns"):
        out[key] = [x for x in out[key] if role not in x]
    return out


def powered_off(snap: dict, role: str) -> dict:
    """``snap`` with ``role``'s guest shut off (still defined) and nothing else
    changed: what a power-off teardown (POWER_OFF_KINDS) leaves."""
    out = json.loads(json.dumps(snap))
    out["domains"][role] = "shutoff"
    return out


def _plain(row) -> dict:
    """A DB row as JSON-comparable values (datetimes as ISO strings)."""
    return {k: (v.isoformat() if isinstance(v, datetime.datetime) else v)
            for k, v in row.items()}


def comparable(snap: dict, role: str, *, row: str = "same") -> dict:
    """``snap`` with the role's row left out when ``row="changed"`` (see ``without``)."""
    out = json.loads(json.dumps(snap))
    if row == "changed":
        out["rows"].pop(role, None)
        out.get("migrations", {}).pop(role, None)
    return out


def assert_reclaimed(row: dict) -> None:
    assert row is not None, "the reclaimed row is gone"
    got = {k: row[k] for k in RECLAIMED}
    assert got == RECLAIMED and row["deleted"] == row["id"], row
    assert row["deleted_at"] is not None and row["terminated_at"] is not None, row
