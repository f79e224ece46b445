"""`reaper-manage demo`: a throwaway host that shows every classification.

Builds, in a temporary directory, libvirt's in-process test driver with a dozen
domains, a SQLite Nova DB with matching rows and migrations, and instance
directories; then runs an audit pass, a reap pass and a final audit. Needs no
root and no service. The builders are reused by the benchmark.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging as std_logging
import os
import re
import shutil
import sys
import tempfile
import uuid as uuidlib
from xml.sax.saxutils import escape

import sqlalchemy as sa

from reaper import audit as audit_mod
from reaper import policy as policy_mod
from reaper import reconcile
from reaper import state as state_mod
from reaper.kinds.instance import libvirt as libvirt_inv
from reaper.nova import schema
from reaper.objects.fields import Action, Classification

NOVA_NS = "http://openstack.org/xmlns/libvirt/nova/1.1"
HOST = "demo-compute-1"
OTHER = "demo-compute-2"
# test driver run states (virDomainState): 1 running, 3 paused, 5 shutoff
RUNNING, PAUSED, SHUTOFF = 1, 3, 5


def domain_xml(uuid: str, name: str, *, nova: bool = True, state: int = RUNNING,
               disks: list[str] = (), volumes: list[str] = ()) -> str:
    meta = (f'<metadata><nova:instance xmlns:nova="{NOVA_NS}"><nova:name>{escape(name)}'
            f'</nova:name></nova:instance></metadata>') if nova else ""
    devs = "".join(
        f"<disk type='file' device='disk'><source file='{escape(p)}'/>"
        f"<target dev='vd{chr(97 + i)}' bus='virtio'/></disk>" for i, p in enumerate(disks))
    devs += "".join(
        f"<disk type='block' device='disk'><source dev='/dev/disk/by-path/ip-192.0.2.10:3260-"
        f"iscsi-iqn.2010-10.org.openstack:volume-{v}-lun-1'/>"
        f"<target dev='vd{chr(112 + i)}' bus='virtio'/><serial>{v}</serial></disk>"
        for i, v in enumerate(volumes))
    return (f"<domain type='test' xmlns:test='http://libvirt.org/schemas/domain/test/1.0'>"
            f"<name>{escape(name)}</name><uuid>{uuid}</uuid><memory>32768</memory>"
            f"{meta}<os><type>hvm</type></os><devices>{devs}</devices>"
            f"<test:runstate>{state}</test:runstate></domain>")


def node_xml(domains: list[str]) -> str:
    return "<node>" + "".join(domains) + "</node>"


def now_utc() -> datetime.datetime:
    return reconcile.utcnow()


@dataclasses.dataclass
class DemoInstance:
    label: str
    uuid: str
    expect: str
    domain: bool = True
    dir: str | None = "instance"    # instance | resize | del | None


def _row(uuid: str, inst_id: int, host: str | None, **kw) -> dict:
    base = dict(id=inst_id, uuid=uuid, host=host, node=host, vm_state="active",
                task_state=None, power_state=1, deleted=0, deleted_at=None,
                display_name=kw.pop("display_name", f"vm-{inst_id}"),
                project_id="demo-project", user_id="demo-user",
                created_at=now_utc() - datetime.timedelta(days=3))
    base.update(kw)
    return base


def build(root: str) -> tuple[reconcile.Reaper, dict, list[DemoInstance]]:
    """Lay the demo host out under ``root``; return a Reaper wired to it."""
    inst_path = os.path.join(root, "instances")
    os.makedirs(inst_path)
    url = f"sqlite:///{os.path.join(root, 'nova.sqlite')}"
    engine = sa.create_engine(url)
    schema.create_all(engine)
    now = now_utc()
    old = now - datetime.timedelta(days=2)
    recent = now - datetime.timedelta(seconds=30)
    u = {k: str(uuidlib.uuid4()) for k in (
        "live1", "live2", "drift", "evacuated", "resizing", "foreign", "deleted_old",
        "deleted_recent", "unknown", "soft_old", "soft_new", "soft_rowonly", "orphan",
        "stale_resize", "interrupted", "notnova")}
    ids = {k: i + 1 for i, k in enumerate(u)}
    missing_vol, extra_vol = str(uuidlib.uuid4()), str(uuidlib.uuid4())
    cast = [
        DemoInstance("live1", u["live1"], "live: left alone"),
        DemoInstance("live2", u["live2"], "live: left alone"),
        DemoInstance("drift", u["drift"], "live, but its volumes disagree with Nova: logged"),
        DemoInstance("evacuated", u["evacuated"], "evacuated to another host: reaped"),
        DemoInstance("resizing", u["resizing"], "resize in flight: never touched"),
        DemoInstance("foreign", u["foreign"], "another host's instance, no evacuation: logged"),
        DemoInstance("deleted_old", u["deleted_old"], "deleted long ago, still running: reaped"),
        DemoInstance("deleted_recent", u["deleted_recent"],
                     "deleted seconds ago: waits for running_deleted_timeout"),
        DemoInstance("unknown", u["unknown"], "no row in this cell: logged"),
        DemoInstance("soft_old", u["soft_old"], "soft-deleted past the interval: reclaimed"),
        DemoInstance("soft_new", u["soft_new"], "soft-deleted recently: restorable, kept"),
        DemoInstance("soft_rowonly", u["soft_rowonly"],
                     "soft-deleted, nothing left on the host: DB finalized", domain=False,
                     dir=None),
        DemoInstance("orphan", u["orphan"], "directory of a deleted instance: reaped",
                     domain=False),
        DemoInstance("stale_resize", u["stale_resize"], "_resize dir, no resize pending: reaped",
                     domain=False, dir="resize"),
        DemoInstance("interrupted", u["interrupted"], "_del dir of an interrupted delete: reaped",
                     domain=False, dir="del"),
        DemoInstance("notnova", u["notnova"], "not Nova's domain: never touched, not listed",
                     dir=None),
    ]
    rows = [
        _row(u["live1"], ids["live1"], HOST),
        _row(u["live2"], ids["live2"], HOST, vm_state="stopped", power_state=4),
        _row(u["drift"], ids["drift"], HOST),
        _row(u["evacuated"], ids["evacuated"], OTHER, task_state=None),
        _row(u["resizing"], ids["resizing"], OTHER, vm_state="resized"),
        _row(u["foreign"], ids["foreign"], OTHER),
        _row(u["deleted_old"], ids["deleted_old"], HOST, vm_state="deleted",
             deleted=ids["deleted_old"], deleted_at=old),
        _row(u["deleted_recent"], ids["deleted_recent"], HOST, vm_state="deleted",
             deleted=ids["deleted_recent"], deleted_at=recent),
        _row(u["soft_old"], ids["soft_old"], HOST, vm_state="soft-delete", power_state=4,
             deleted_at=old),
        _row(u["soft_new"], ids["soft_new"], HOST, vm_state="soft-delete", power_state=4,
             deleted_at=recent),
        _row(u["soft_rowonly"], ids["soft_rowonly"], HOST, vm_state="soft-delete",
             power_state=0, deleted_at=None),
        _row(u["orphan"], ids["orphan"], HOST, vm_state="deleted", deleted=ids["orphan"],
             deleted_at=old),
        _row(u["stale_resize"], ids["stale_resize"], HOST),
        _row(u["interrupted"], ids["interrupted"], HOST, vm_state="deleted",
             deleted=ids["interrupted"], deleted_at=old),
    ]
    with engine.begin() as c:
        c.execute(schema.services.insert(), [dict(host=HOST, binary="nova-compute",
                                                  topic="compute", report_count=1, deleted=0)])
        c.execute(schema.compute_nodes.insert(), [dict(
            host=HOST, hypervisor_hostname=HOST, uuid=str(uuidlib.uuid4()), vcpus=8,
            memory_mb=16384, local_gb=100, vcpus_used=0, memory_mb_used=0, local_gb_used=0,
            hypervisor_type="QEMU", hypervisor_version=8002000, cpu_info="{}", deleted=0)])
        c.execute(schema.instances.insert(), rows)
        c.execute(schema.migrations.insert(), [
            dict(instance_uuid=u["evacuated"], source_compute=HOST, dest_compute=OTHER,
                 source_node=HOST, dest_node=OTHER, status="done",
                 migration_type="evacuation", uuid=str(uuidlib.uuid4()), deleted=0),
            dict(instance_uuid=u["resizing"], source_compute=HOST, dest_compute=OTHER,
                 source_node=HOST, dest_node=OTHER, status="finished",
                 migration_type="resize", uuid=str(uuidlib.uuid4()), deleted=0),
        ])
        c.execute(schema.block_device_mapping.insert(), [
            dict(instance_uuid=u["drift"], volume_id=missing_vol, source_type="volume",
                 destination_type="volume", device_name="/dev/vdb", deleted=0,
                 delete_on_termination=False, uuid=str(uuidlib.uuid4()),
                 connection_info=json.dumps({"driver_volume_type": "iscsi", "data": {}})),
            dict(instance_uuid=u["soft_old"], volume_id=str(uuidlib.uuid4()),
                 source_type="volume", destination_type="volume", device_name="/dev/vdb",
                 delete_on_termination=True, deleted=0, uuid=str(uuidlib.uuid4()),
                 connection_info=None),
        ])
        c.execute(schema.instance_info_caches.insert(), [
            dict(instance_uuid=u["soft_old"], deleted=0, network_info=json.dumps(
                [{"id": str(uuidlib.uuid4()), "address": "fa:16:3e:00:00:01", "type": "ovs"}])),
        ])

    domains = []
    xml_by_name = {}
    for member in cast:
        if member.dir:
            suffix = {"instance": "", "resize": "_resize", "del": "_del"}[member.dir]
            d = os.path.join(inst_path, member.uuid + suffix)
            os.makedirs(d)
            with open(os.path.join(d, "disk"), "wb") as f:
                f.write(b"\0" * 4096)
            with open(os.path.join(d, "console.log"), "w") as f:
                f.write("demo console\n")
        if member.domain:
            name = (f"instance-{ids[member.label]:08x}" if member.label != "notnova"
                    else "build-server")
            disks = [os.path.join(inst_path, member.uuid, "disk")] if member.dir else []
            state = SHUTOFF if member.label.startswith("soft") else RUNNING
            xml_by_name[name] = domain_xml(member.uuid, name, nova=member.label != "notnova",
                                           state=state, disks=disks,
                                           volumes=[extra_vol] if member.label == "drift"
                                           else [])
            domains.append(xml_by_name[name])
    node = os.path.join(root, "node.xml")
    with open(node, "w") as f:
        f.write(node_xml(domains))

    pol = policy_mod.Policy(
        host=HOST, hypervisor_hostname=HOST, instances_path=inst_path,
        actions=policy_mod.default_actions(), reclaim_instance_interval=3600,
        running_deleted_timeout=600, grace_observations=1, grace_seconds=0,
        max_destroy_per_pass=10, max_destroy_fraction=1.0, instances_path_shared="false")
    conn = libvirt_inv.open_connection(f"test://{node}")
    state_dir = os.path.join(root, "state")
    reaper = reconcile.Reaper(
        policy=pol, libvirt_uri=f"test://{node}", engine=engine,
        state=state_mod.StateDB(state_dir),
        audit=audit_mod.AuditLog(os.path.join(root, "audit.log"), HOST),
        connect=lambda: conn)
    return reaper, {"conn": conn, "engine": engine, "instances_path": inst_path,
                    "audit_log": os.path.join(root, "audit.log"), "node": node,
                    "domain_xml": xml_by_name}, cast


def keep(root: str, reaper: reconcile.Reaper, handles: dict) -> str:
    """Make the demo host usable after the demo: the test driver's host file as the
    passes left it, and a reaper.conf for reaper-manage; returns the config's path.

    libvirt's test driver keeps its changes per connection: without rewriting
    node.xml, a new connection would bring back every domain the reap destroyed.
    The configuration keeps the demo off this machine's own resources (no network
    or iSCSI of this host, no nova-compute's compute_id file) and uses the demo's
    policy (no grace, no destroy limit)."""
    conn, xml_by_name = handles["conn"], handles["domain_xml"]
    left = []
    for dom in conn.listAllDomains(0):
        state = dom.state()[0]
        left.append(re.sub(r"<test:runstate>\d+</test:runstate>",
                           f"<test:runstate>{state}</test:runstate>", xml_by_name[dom.name()]))
    with open(handles["node"], "w") as f:
        f.write(node_xml(left))
    pol = reaper.policy
    for d in ("sys", "dev"):
        os.makedirs(os.path.join(root, "empty", d), exist_ok=True)
    path = os.path.join(root, "reaper.conf")
    with open(path, "w") as f:
        f.write(f"""\
# reaper-manage demo --keep: the demo host's configuration.
#   reaper-manage --config-file {path} audit
[DEFAULT]
host = {pol.host}
hypervisor_hostname = {pol.hypervisor_hostname}
instances_path = {pol.instances_path}
state_path = {os.path.dirname(reaper.state.path)}
compute_id_file =

[database]
connection = {handles["engine"].url.render_as_string(hide_password=False)}

[libvirt]
connection_uri = test://{handles["node"]}

[reaper]
audit_log = {handles["audit_log"]}
reclaim_instance_interval = {pol.reclaim_instance_interval}
running_deleted_timeout = {pol.running_deleted_timeout}
grace_observations = {pol.grace_observations}
grace_seconds = {pol.grace_seconds}
max_destroy_per_pass = {pol.max_destroy_per_pass}
max_destroy_fraction = {pol.max_destroy_fraction}
instances_path_shared = {pol.instances_path_shared}

# this machine's own devices, OVS ports and iSCSI sessions are not the demo's
[network]
enabled = false

[iscsi]
sysfs_root = {os.path.join(root, "empty", "sys")}
dev_root = {os.path.join(root, "empty", "dev")}
iscsiadm = reaper-demo-no-iscsiadm
""")
    return path


def run(keep_dir: bool = False, fmt: str = "table") -> int:
    # The audit records are in the audit log; keep the terminal for the report.
    std_logging.getLogger("reaper").setLevel(std_logging.ERROR)
    root = tempfile.mkdtemp(prefix="reaper-demo-")
    try:
        reaper, handles, cast = build(root)
        out = []
        say = out.append if fmt == "json" else print
        if fmt != "json":
            print(f"Demo host {HOST} in {root}")
            print("Cast:")
            for m in cast:
                print(f"  {m.label:<15} {m.uuid}  {m.expect}")
            print("\n== 1. audit pass (never acts) ==")
        rep1 = reaper.run_pass("audit")
        say(rep1.as_dict()) if fmt == "json" else print(rep1.to_table())
        if fmt != "json":
            print("\n== 2. reap pass (acts as configured) ==")
        rep2 = reaper.run_pass("reap")
        say(rep2.as_dict()) if fmt == "json" else print(rep2.to_table())
        if fmt != "json":
            print("\n== 3. audit pass after the reap: what is left ==")
        rep3 = reaper.run_pass("audit")
        say(rep3.as_dict()) if fmt == "json" else print(rep3.to_table())
        left = sorted(d.name() for d in handles["conn"].listAllDomains(0))
        if fmt == "json":
            print(json.dumps({"passes": out, "domains_left": left,
                              "dirs_left": sorted(os.listdir(handles["instances_path"]))},
                             indent=2, default=str))
        else:
            print(f"\ndomains left: {', '.join(left)}")
            print(f"instance dirs left: {', '.join(sorted(os.listdir(handles['instances_path'])))}")
            print(f"audit log: {handles['audit_log']}" + ("" if keep_dir else " (removed; "
                                                                               "--keep keeps it)"))
        if keep_dir:
            conf = keep(root, reaper, handles)
            hint = (f"kept {root}: the Nova DB, the test driver's host as the passes left "
                    f"it, instance dirs, state DB, audit log and {conf} for them. "
                    f"Continue with:\n  reaper-manage --config-file {conf} audit")
            print(hint, file=sys.stderr if fmt == "json" else sys.stdout)
        reaper.close()
        return 0 if rep2.exit_code == 4 else rep2.exit_code
    finally:
        if not keep_dir:
            shutil.rmtree(root, ignore_errors=True)


__all__ = ["run", "build", "domain_xml", "node_xml", "Action", "Classification"]
