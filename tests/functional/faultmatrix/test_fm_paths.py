"""Fault matrix, slice "paths": directories, path spellings and the files domains use.

Every scenario is a whole pass (or two) on real parts: libvirt's in-process test
driver (one connection shared by the passes, as the agent keeps one), a SQLite Nova
DB built with tests/fixtures/novadb.py, and real directories under a temporary
instances_path. Domain names contain "fmpaths".
"""
from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import uuid as uuidlib
from xml.sax.saxutils import escape, quoteattr

import pytest
import sqlalchemy as sa

from reaper import audit as audit_mod
from reaper import policy as policy_mod
from reaper import reconcile
from reaper import state as state_mod
from reaper.kinds.instance import files as file_steps
from reaper.kinds.instance import libvirt as libvirt_inv
from reaper.nova import schema
from reaper.objects.fields import Action, Classification
from tests.fixtures import novadb

pytestmark = pytest.mark.functional

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"
OLD = datetime.timedelta(days=2)
DISK_BYTES = b"customer data " * 64


# --------------------------------------------------------------------------
# The host: test driver + SQLite Nova DB + instances_path
# --------------------------------------------------------------------------

def domain_xml(uuid: str, name: str, *, nova: bool = True, disks=(), os_extra: str = "",
               devices: str = "", top: str = "") -> str:
    """A test-driver domain; ``disks`` are file paths, ``os_extra`` goes inside <os>
    (loader, nvram, kernel...), ``devices`` inside <devices>, ``top`` after <uuid>."""
    meta = (f'<metadata><nova:instance xmlns:nova="{NOVA_NS}"><nova:name>{escape(name)}'
            f'</nova:name></nova:instance></metadata>') if nova else ""
    devs = "".join(
        f"<disk type='file' device='disk'><source file={quoteattr(str(p))}/>"
        f"<target dev='vd{chr(97 + i)}' bus='virtio'/></disk>" for i, p in enumerate(disks))
    return (f"<domain type='test'><name>{escape(name)}</name><uuid>{uuid}</uuid>{top}"
            f"<memory>32768</memory>{meta}<os><type>hvm</type>{os_extra}</os>"
            f"<devices>{devs}{devices}</devices></domain>")


class Host:
    """One throwaway compute host; ``reaper(**policy)`` builds a Reaper over it."""

    def __init__(self, tmp_path, instances_path=None):
        self.tmp = tmp_path
        self.name = f"fmpaths-{uuidlib.uuid4().hex[:8]}"
        node = tmp_path / "node.xml"
        node.write_text(f"<node xmlns:test='{TEST_NS}'></node>")
        self.uri = f"test://{node}"
        self.conn = libvirt_inv.open_connection(self.uri)
        self.engine = sa.create_engine(f"sqlite:///{tmp_path / 'nova.sqlite'}")
        schema.create_all(self.engine)
        novadb.add_compute_node(self.engine, self.name)
        # a live instance of this host, so the DB visibly knows it (empty-view guard)
        novadb.add_instance(self.engine, host=self.name)
        self.real = tmp_path / "instances"
        self.real.mkdir()
        # how [DEFAULT] instances_path is spelled (a symlink, with //...)
        self.instances_path = str(instances_path or self.real)
        self.n = 0

    def close(self):
        self.conn.close()
        self.engine.dispose()

    def reaper(self, **pol) -> reconcile.Reaper:
        base = dict(host=self.name, hypervisor_hostname=self.name,
                    instances_path=self.instances_path, actions=policy_mod.default_actions(),
                    grace_observations=1, grace_seconds=0, max_destroy_per_pass=10,
                    max_destroy_fraction=1.0, instances_path_shared="false",
                    running_deleted_timeout=0)
        actions = pol.pop("actions", {})
        base["actions"] = {**base["actions"], **actions}
        base.update(pol)
        return reconcile.Reaper(
            policy=policy_mod.Policy(**base), libvirt_uri=self.uri, engine=self.engine,
            state=state_mod.StateDB(str(self.tmp / "state")),
            audit=audit_mod.AuditLog(str(self.tmp / "audit.log"), self.name),
            connect=lambda: self.conn)

    def make_dir(self, name: str, files=("disk",)):
        d = self.real / name
        d.mkdir()
        for f in files:
            (d / f).write_bytes(DISK_BYTES)
        return d

    def deleted_instance(self) -> str:
        return novadb.add_instance(self.engine, host=self.name, deleted=True,
                                   deleted_at=novadb.utcnow() - OLD)["uuid"]

    def define(self, uuid: str | None = None, *, nova: bool = False, start: bool = True,
               name: str | None = None, **kw):
        self.n += 1
        uuid = uuid or novadb.new_uuid()
        name = name or (f"instance-fmpaths-{self.n}" if nova else f"fmpaths-rescue-{self.n}")
        dom = self.conn.defineXML(domain_xml(uuid, name, nova=nova, **kw))
        if start:
            dom.create()
        return dom

    def has_domain(self, uuid: str) -> bool:
        return uuid in {d.UUIDString() for d in self.conn.listAllDomains(0)}

    def audit_records(self, event: str) -> list[dict]:
        lines = (self.tmp / "audit.log").read_text().splitlines()
        return [r for r in map(json.loads, lines) if r["event"] == event]


@pytest.fixture
def fmhost(tmp_path):
    h = Host(tmp_path)
    yield h
    h.close()


def tmpfs(path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "fmpaths", str(path)], check=True)


def umount(path):
    subprocess.run(["umount", str(path)], check=False)


def intact(d) -> bool:
    return (d / "disk").read_bytes() == DISK_BYTES


# --------------------------------------------------------------------------
# Issue 9 item 2: a directory deleted under a domain with the same uuid
# --------------------------------------------------------------------------

def test_orphan_dir_resumed_after_its_domain_is_defined_again(fmhost):
    """An orphan-dir teardown fails once (a mount inside) and is journaled; the instance's domain is then defined again on its disk (running_deleted_action = log) and the next pass resumes the teardown.

    Expect: the resumed teardown is aborted before the rename; directory, disk and domain stay; the journal is empty; exit 3.
    """
    u = fmhost.deleted_instance()
    d = fmhost.make_dir(u)
    (d / "mnt").mkdir()
    tmpfs(d / "mnt")
    try:
        r = fmhost.reaper(actions={Classification.RUNNING_DELETED: Action.LOG})
        rep = r.run_pass("reap")
        assert [(a["classification"], a["result"]) for a in rep.actions] == [
            ("orphan_dir", "failed")], rep.to_table()
        assert len(r.state.unfinished()) == 1
    finally:
        umount(d / "mnt")
    fmhost.define(u, nova=True, disks=[d / "disk"])
    rep = r.run_pass("reap")
    assert [(a["classification"], a["result"]) for a in rep.actions] == [
        ("orphan_dir", "aborted")], rep.to_table()
    assert "in use" in rep.actions[0]["reason"]
    assert rep.exit_code == 3, rep.to_table()
    assert intact(d) and fmhost.has_domain(u)
    assert r.state.unfinished() == []


def manage(conf, *args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    return subprocess.run([sys.executable, "-m", "reaper.cmd.manage", "--config-file",
                           str(conf), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_orphan_dir_resumed_by_another_process_after_its_domain_is_defined_again(
        tmp_path, kvm_domain_factory, libvirt_conn):
    """On libvirtd: `reaper-manage reap` fails an orphan-dir teardown (a mount inside) and journals it; the instance's domain is defined again on its disk (kept: running_deleted_action = log); a second `reaper-manage reap` process resumes the journal.

    Expect: the second process aborts the resumed teardown; directory, disk and domain stay; exit 1 then 3.
    """
    host = f"fmpaths-{uuidlib.uuid4().hex[:8]}"
    url = f"sqlite:///{tmp_path / 'nova.sqlite'}"
    eng = sa.create_engine(url)
    schema.create_all(eng)
    novadb.add_compute_node(eng, host)
    u = novadb.add_instance(eng, host=host, deleted=True,
                            deleted_at=novadb.utcnow() - OLD)["uuid"]
    eng.dispose()
    d = tmp_path / "instances" / u
    (d / "mnt").mkdir(parents=True)
    (d / "disk").write_bytes(DISK_BYTES)
    conf = tmp_path / "reaper.conf"
    conf.write_text(
        f"[DEFAULT]\nhost = {host}\nhypervisor_hostname = {host}\n"
        f"instances_path = {tmp_path / 'instances'}\n"
        f"state_path = {tmp_path / 'state'}\n[database]\nconnection = {url}\n"
        f"[libvirt]\nconnection_uri = qemu:///system\n[network]\nenabled = false\n"
        f"[reaper]\naudit_log = {tmp_path / 'audit.log'}\ngrace_observations = 1\n"
        f"grace_seconds = 0\ninstances_path_shared = false\nmax_destroy_fraction = 1.0\n"
        f"running_deleted_action = log\n")
    tmpfs(d / "mnt")
    try:
        r = manage(conf, "reap", "--format", "json")
        acts = [(a["instance_uuid"], a["result"]) for a in json.loads(r.stdout)["actions"]]
        assert r.returncode == 1 and acts == [(u, "failed")], r.stdout + r.stderr
    finally:
        umount(d / "mnt")
    kvm_domain_factory(u, name=f"fmpaths-{u[:8]}", disks=[d / "disk"])
    r = manage(conf, "reap", "--format", "json")
    rep = json.loads(r.stdout)
    acts = [(a["instance_uuid"], a["result"]) for a in rep["actions"]]
    assert acts == [(u, "aborted")], r.stdout + r.stderr
    assert r.returncode == 3 and intact(d)
    libvirt_conn.lookupByUUIDString(u)      # still defined


@pytest.mark.parametrize("who", [
    pytest.param("same-uuid", id="same-uuid-on-its-disk"),
    pytest.param("same-uuid-elsewhere", id="same-uuid-disk-elsewhere"),
    pytest.param("other-uuid-nvram", id="other-domain-nvram-only"),
])
def test_domain_defined_on_orphan_dir_between_plan_and_act(fmhost, who):
    """After the plan and before the act of an orphan-dir teardown, a domain is defined that uses the directory (the instance's own uuid on its disk, its own uuid with no file there, or another domain with only its NVRAM there).

    Expect: the act-time re-check on libvirt's current domains aborts the teardown; directory and domain stay; exit 3.
    """
    u = fmhost.deleted_instance()
    d = fmhost.make_dir(u, files=("disk", "nvram"))
    elsewhere = fmhost.tmp / "elsewhere.img"
    elsewhere.write_bytes(b"x")

    def define_now(_rep):
        if who == "same-uuid":
            fmhost.define(u, nova=True, disks=[d / "disk"])
        elif who == "same-uuid-elsewhere":
            fmhost.define(u, nova=True, disks=[elsewhere])
        else:
            fmhost.define(os_extra=FILE_USES["nvram"]["os_extra"].format(d=d))

    r = fmhost.reaper(actions={Classification.RUNNING_DELETED: Action.LOG})
    rep = r.run_pass("reap", on_planned=define_now)
    assert [(a["classification"], a["result"]) for a in rep.actions] == [
        ("orphan_dir", "aborted")], rep.to_table()
    assert rep.exit_code == 3
    assert intact(d) and (d / "nvram").exists()


def test_running_deleted_instance_whose_dir_another_domain_uses(fmhost):
    """A running-deleted instance is reaped while a non-Nova domain (a rescue box) runs on a disk in the instance's directory.

    Expect: the instance's domain is destroyed and undefined, its directory is kept (evidence dirs_kept), the rescue box runs on; exit 4.
    """
    u = fmhost.deleted_instance()
    d = fmhost.make_dir(u, files=("disk", "rescue.img"))
    fmhost.define(u, nova=True, disks=[d / "disk"])
    rescue = fmhost.define(disks=[d / "rescue.img"])
    rep = fmhost.reaper().run_pass("reap")
    assert [(a["classification"], a["result"]) for a in rep.actions] == [
        ("running_deleted", "done")], rep.to_table()
    assert rep.actions[0]["evidence"]["dirs"] == []
    (f,) = [f for f in rep.findings if f["instance_uuid"] == u]
    assert str(d) in f["evidence"]["dirs_kept"]
    assert not fmhost.has_domain(u) and rescue.isActive() and intact(d)
    assert rep.exit_code == 4


def test_domain_defined_on_the_second_dir_while_the_first_is_deleted(fmhost, monkeypatch):
    """A running-deleted instance has <uuid> and <uuid>_resize; while its teardown removes <uuid>, a rescue domain is defined on a disk in <uuid>_resize.

    Expect: <uuid> is gone, <uuid>_resize and the rescue domain stay (the check runs again right before each directory's rename); the teardown ends aborted; exit 3.
    """
    u = fmhost.deleted_instance()
    d = fmhost.make_dir(u)
    old = fmhost.make_dir(f"{u}_resize")
    fmhost.define(u, nova=True, disks=[d / "disk"])
    real_delete = file_steps.delete_instance_dir

    def delete_then_define(path, instances_path):
        out = real_delete(path, instances_path)
        if path == str(d):
            fmhost.define(disks=[old / "disk"])
        return out

    monkeypatch.setattr(file_steps, "delete_instance_dir", delete_then_define)
    rep = fmhost.reaper().run_pass("reap")
    assert [(a["classification"], a["result"]) for a in rep.actions] == [
        ("running_deleted", "aborted")], rep.to_table()
    assert "fmpaths-rescue" in rep.actions[0]["reason"]
    assert not d.exists() and intact(old) and rep.exit_code == 3


# --------------------------------------------------------------------------
# Issue 9 item 3: path spellings
# --------------------------------------------------------------------------

@pytest.mark.parametrize("spelling", [
    pytest.param("exact", id="exact"),
    pytest.param("symlink", id="instances-path-symlink"),
    pytest.param("double-slash", id="instances-path-double-slash"),
    pytest.param("dot-dot", id="instances-path-dot-dot"),
    pytest.param("domain-via-symlink", id="domain-disk-via-symlink"),
])
def test_non_nova_domain_on_orphan_disk_whatever_the_spelling(tmp_path, spelling):
    """A non-Nova domain runs on <orphan-uuid>/disk while instances_path is spelled exactly, through a symlink, with '//' or '..', or the domain names the disk through a symlink.

    Expect: the orphan directory is only logged (never reaped), disk and domain stay; exit 3.
    """
    real = tmp_path / "instances"
    link = tmp_path / "nova-instances"
    configured = {"exact": real, "symlink": link, "domain-via-symlink": real,
                  "double-slash": f"{tmp_path}//instances",
                  "dot-dot": f"{tmp_path}/instances/../instances"}[spelling]
    h = Host(tmp_path, instances_path=configured)
    try:
        os.symlink(real, link)
        u = h.deleted_instance()
        d = h.make_dir(u)
        disk = (link if spelling == "domain-via-symlink" else real) / u / "disk"
        dom = h.define(disks=[disk])
        rep = h.reaper().run_pass("reap")
        assert rep.actions == [], rep.to_table()
        (f,) = rep.findings
        assert (f["classification"], f["action"]) == ("orphan_dir", "log")
        assert "fmpaths-rescue" in f["reason"]
        assert rep.exit_code == 3 and intact(d) and dom.isActive()
    finally:
        h.close()


# --------------------------------------------------------------------------
# Any file source pins: NVRAM, kernel, console log...
# --------------------------------------------------------------------------

FILE_USES = {
    "nvram": dict(os_extra="<loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd"
                           "</loader><nvram>{d}/nvram</nvram>"),
    "kernel": dict(os_extra="<kernel>{d}/kernel</kernel>"),
    "initrd": dict(os_extra="<initrd>{d}/initrd</initrd>"),
    "console-log": dict(devices="<serial type='pty'><log file='{d}/console.log' "
                                "append='off'/></serial>"),
    "serial-file": dict(devices="<serial type='file'><source path='{d}/serial.txt'/></serial>"),
    "filesystem-dir": dict(devices="<filesystem type='mount'><source dir='{d}/share'/>"
                                   "<target dir='share'/></filesystem>"),
    "backing-store": dict(devices="<disk type='file' device='disk'><source file='{top}'/>"
                                  "<backingStore type='file'><format type='qcow2'/>"
                                  "<source file='{d}/disk'/><backingStore/></backingStore>"
                                  "<target dev='vda' bus='virtio'/></disk>"),
}


@pytest.mark.parametrize("use", [pytest.param(k, id=k) for k in FILE_USES])
def test_domain_using_only_a_non_disk_file_in_an_orphan_dir(fmhost, use):
    """Another domain uses one file of an orphan directory that is not a disk source: its NVRAM, kernel, initrd, console log, file serial, a <filesystem> dir or a disk's backing store.

    Expect: the orphan directory is only logged, naming the domain; nothing is deleted; exit 3.
    """
    u = fmhost.deleted_instance()
    d = fmhost.make_dir(u, files=("disk", "nvram", "kernel", "initrd", "console.log",
                                  "serial.txt"))
    (d / "share").mkdir()
    top = fmhost.tmp / "top.qcow2"
    top.write_bytes(b"x")
    kw = {k: v.format(d=d, top=top) for k, v in FILE_USES[use].items()}
    fmhost.define(**kw)
    rep = fmhost.reaper().run_pass("reap")
    assert rep.actions == [], rep.to_table()
    (f,) = rep.findings
    assert (f["classification"], f["action"]) == ("orphan_dir", "log")
    assert "fmpaths-rescue" in f["reason"] and rep.exit_code == 3
    assert intact(d)


# --------------------------------------------------------------------------
# Issue 9 item 15: same-host resize leftovers
# --------------------------------------------------------------------------

@pytest.mark.parametrize("case", [
    pytest.param("confirmed", id="resize-confirmed"),
    pytest.param("awaiting-confirm", id="resize-awaiting-confirm"),
    pytest.param("domain-file-inside", id="domain-file-in-resize"),
    pytest.param("no-record", id="no-resize-record"),
])
def test_same_host_resize_leftover_of_a_live_instance(fmhost, case):
    """A live instance of this host runs on <uuid>/disk next to a <uuid>_resize directory: its same-host resize confirmed long ago, awaiting confirmation, confirmed but its domain still using a file in _resize, or with no resize record at all.

    Expect: only the confirmed leftover is reaped as stale_resize (exit 4); otherwise _resize stays (exit 3 when logged, 0 when awaiting); the instance's directory and running domain are never touched.
    """
    h = fmhost.name
    vm_state = "resized" if case == "awaiting-confirm" else "active"
    u = novadb.add_instance(fmhost.engine, host=h, vm_state=vm_state)["uuid"]
    if case != "no-record":
        status = "finished" if case == "awaiting-confirm" else "confirmed"
        novadb.add_migration(fmhost.engine, u, h, h, status, "resize")
    d = fmhost.make_dir(u)
    old = fmhost.make_dir(f"{u}_resize", files=("disk", "disk.config"))
    disks = [d / "disk"] + ([old / "disk.config"] if case == "domain-file-inside" else [])
    dom = fmhost.define(u, nova=True, disks=disks)
    rep = fmhost.reaper().run_pass("reap")
    got = [(f["classification"], f["action"]) for f in rep.findings]
    if case == "confirmed":
        assert got == [("stale_resize", "reap")], rep.to_table()
        assert [a["result"] for a in rep.actions] == ["done"] and rep.exit_code == 4
        assert not old.exists()
    elif case == "awaiting-confirm":
        assert got == [] and rep.exit_code == 0, rep.to_table()
        assert intact(old)
    else:
        assert got == [("stale_resize", "log")], rep.to_table()
        assert rep.actions == [] and rep.exit_code == 3 and intact(old)
    assert intact(d) and dom.isActive()


# --------------------------------------------------------------------------
# Hostile domain XML
# --------------------------------------------------------------------------

@pytest.mark.parametrize("hostile", [
    pytest.param("huge-attribute", id="huge-attribute"),
    pytest.param("huge-xml", id="huge-xml"),
])
def test_hostile_domain_xml_never_stops_the_pass(fmhost, hostile):
    """A domain's XML holds a 2 MB attribute, or is 20 MB long (libvirt stores and returns both), while an orphan directory and a running-deleted instance are on the host.

    Expect: the pass completes: the hostile domain is kept as unreadable and logged; since it may use any directory, the orphan directory is only logged and the running-deleted instance is reaped with its directory kept; exit 4.
    """
    if hostile == "huge-attribute":
        fmhost.define(disks=["/" + "a" * 2_000_000])
    else:
        fmhost.define(top=f"<description>{'d' * 20_000_000}</description>")
    orphan_u = fmhost.deleted_instance()
    orphan = fmhost.make_dir(orphan_u)
    u = fmhost.deleted_instance()
    d = fmhost.make_dir(u)
    fmhost.define(u, nova=True, disks=[d / "disk"])
    rep = fmhost.reaper().run_pass("reap")
    assert rep.errors == [], rep.to_table()
    assert [(a["classification"], a["result"]) for a in rep.actions] == [
        ("running_deleted", "done")], rep.to_table()
    (f,) = [f for f in rep.findings if f["instance_uuid"] == orphan_u]
    assert f["action"] == "log" and "could not be read" in f["reason"]
    assert not fmhost.has_domain(u) and intact(d) and intact(orphan)
    assert rep.exit_code == 4


# --------------------------------------------------------------------------
# The one-filesystem check after the rename
# --------------------------------------------------------------------------

def test_mount_inside_an_orphan_dir_between_rename_and_removal(fmhost, monkeypatch):
    """A filesystem is mounted inside an orphan directory just after it is renamed to <uuid>_del, before its removal.

    Expect: nothing under the mount is removed; the step fails (journaled for the next pass); exit 1.
    """
    u = fmhost.deleted_instance()
    d = fmhost.make_dir(u)
    (d / "mnt").mkdir()
    real_rename = os.rename
    mounted = []

    def rename_then_mount(src, dst, *a, **kw):
        real_rename(src, dst, *a, **kw)
        if not str(dst).endswith(f"{u}_del"):
            return
        target = os.path.join(dst, "mnt")
        tmpfs(target)
        mounted.append(target)
        with open(os.path.join(target, "precious"), "w") as fh:
            fh.write("keep me")

    monkeypatch.setattr(file_steps.os, "rename", rename_then_mount)
    try:
        rep = fmhost.reaper().run_pass("reap")
        assert [(a["classification"], a["result"]) for a in rep.actions] == [
            ("orphan_dir", "failed")], rep.to_table()
        assert "mounts inside" in rep.actions[0]["reason"]
        with open(os.path.join(mounted[0], "precious")) as fh:
            assert fh.read() == "keep me"
        assert rep.exit_code == 1
    finally:
        for m in mounted:
            umount(m)
