"""Golden master of whole passes: what a pass finds, decides, does, journals and
audits, recorded under tests/golden/ and compared field by field.

Why: issue 10 moves the code into plugin packages without changing behaviour. These
tests pin today's behaviour of whole passes (the demo host; the network plumbing
and iSCSI scenes of the functional suite) so that any change of a classification,
a reason, an evidence field, a step, the order of steps, a journal row, an audit
record, a summary or an exit code shows up as a readable diff. Only what varies
between runs is normalized (tests/fixtures/golden.py). Record again with
``REAPER_GOLDEN_REGEN=1`` only for an intended change, and say so in the commit.

The demo tests need no service (libvirt's test driver, SQLite); the network and
iSCSI ones are marked functional (netns, OVS, the iSCSI simulator, MariaDB).
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import types
import uuid as uuidlib

import pytest
import sqlalchemy as sa

from reaper import demo
from tests.fixtures import golden
from tests.fixtures.netplumb import netns, ovs_bridge  # noqa: F401

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEMO_LABELS = ("live1", "live2", "drift", "evacuated", "resizing", "foreign", "deleted_old",
               "deleted_recent", "unknown", "soft_old", "soft_new", "soft_rowonly", "orphan",
               "stale_resize", "interrupted", "notnova")
NOVA_TABLES = ("instances", "migrations", "block_device_mapping", "instance_info_caches",
               "instance_system_metadata", "instance_extra", "instance_actions",
               "instance_actions_events", "services", "compute_nodes")


def nova_tables(engine) -> dict:
    """Every row of the Nova tables a pass may read or write, ordered by id."""
    md = sa.MetaData()
    md.reflect(engine)
    out = {}
    with engine.connect() as c:
        for name in NOVA_TABLES:
            if name not in md.tables:
                continue
            t = md.tables[name]
            order = [t.c.id] if "id" in t.c else list(t.c)
            out[name] = [dict(r._mapping) for r in c.execute(sa.select(t).order_by(*order))]
    return out


def seeded_uuid4(seed: int):
    rnd = random.Random(seed)
    return lambda: uuidlib.UUID(int=rnd.getrandbits(128), version=4)


# --------------------------------------------------------------------------
# the demo host
# --------------------------------------------------------------------------

def test_demo_passes_in_process(tmp_path, monkeypatch):
    """The demo host's audit, reap and final audit passes, in process: every report
    field, the audit log, the state DB's journal and observations, the Nova rows and
    what is left on the host. The demo's own uuids are made reproducible (a seeded
    uuid4 for reaper.demo only) so that orders that follow uuids are stable."""
    monkeypatch.setattr(demo, "uuidlib", types.SimpleNamespace(uuid4=seeded_uuid4(10)))
    root = str(tmp_path / "demo")
    os.makedirs(root)
    reaper, handles, cast = demo.build(root)
    norm = golden.Normalizer({root: "<root>"})
    gen = seeded_uuid4(10)                  # the same sequence build() drew from
    for i in range(200):
        norm.add(str(gen()), f"<demo-uuid-{i}>")
    for m in cast:
        norm.add(m.uuid, f"<{m.label}>")
    try:
        passes = []
        for mode in ("audit", "reap", "audit"):
            rep = reaper.run_pass(mode)
            passes.append({"exit_code": rep.exit_code, "report": rep.as_dict(),
                           "table": rep.to_table().splitlines()})
        got = {
            "passes": passes,
            "demo_exit_code": 0 if passes[1]["exit_code"] == 4 else passes[1]["exit_code"],
            "audit_log": golden.audit_log(handles["audit_log"]),
            "state": golden.journal_rows(reaper.state.path),
            "nova": nova_tables(handles["engine"]),
            "domains_left": sorted((d.name(), d.state()[0])
                                   for d in handles["conn"].listAllDomains(0)),
            "dirs_left": sorted(os.listdir(handles["instances_path"])),
            "files_left": sorted(os.path.relpath(os.path.join(d, f), root)
                                 for d, _s, fs in os.walk(handles["instances_path"])
                                 for f in fs),
        }
    finally:
        reaper.close()
    golden.check("demo_in_process", canonical(norm(got)))


def canonical(got: dict) -> dict:
    """Orders that follow libvirt's domain listing (random in its test driver, a hash
    table) are compared sorted: findings, actions, audit records of a pass, table
    lines, journal entries (with their ids, which follow the same order, replaced by
    the journal's instance). The steps of one teardown keep their order."""
    ids = {}
    for j in got["state"]["journal"]:
        ids[j["id"]] = f"<journal:{j['instance_uuid']}>"
        j["id"] = ids[j["id"]]
    got["state"]["journal"].sort(key=golden.dumps)
    for s in got["state"]["journal_steps"]:
        s["journal_id"] = ids.get(s["journal_id"], s["journal_id"])
    got["state"]["journal_steps"].sort(key=lambda s: s["journal_id"])    # stable
    _replace_key(got, "journal_id", lambda v: ids.get(v, v))
    for p in got["passes"]:
        for k in ("findings", "actions"):
            p["report"][k].sort(key=golden.dumps)
        p["table"].sort()
    by_pass: dict = {}
    for rec in got["audit_log"]:
        by_pass.setdefault(rec.get("pass_id"), []).append(rec)
    got["audit_log"] = [{"pass_id": pid, "events": sorted({r["event"] for r in recs}),
                         "records": sorted(recs, key=golden.dumps)}
                        for pid, recs in by_pass.items()]
    return got


def _replace_key(obj, key, fn):
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key and isinstance(v, int):
                obj[k] = fn(v)
            else:
                _replace_key(v, key, fn)
    elif isinstance(obj, list):
        for v in obj:
            _replace_key(v, key, fn)


def _demo_subprocess(fmt: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, "-m", "reaper.cmd.manage", "demo", "--format", fmt],
                          capture_output=True, text=True, env=env, timeout=300, cwd=REPO)


def test_demo_command_json():
    """``reaper-manage demo --format json`` as a user runs it: exit code and output.
    Its uuids are random (another process): each instance's uuid is named after its
    role in the demo (found from its Nova row id or domain name), and lists whose
    order follows uuids (findings, actions) are compared sorted."""
    r = _demo_subprocess("json")
    assert r.stdout.strip(), r.stderr[-3000:]
    out = json.loads(r.stdout)
    labels = {}
    for p in out["passes"]:
        for f in p["findings"] + p["actions"]:
            u = f.get("instance_uuid")
            row = (f.get("evidence") or {}).get("db_row") or {}
            rid = row.get("id")
            if rid is None and str(f.get("resource", "")).startswith("instance-"):
                rid = int(f["resource"].split(":")[0].split("-", 1)[1], 16)
            if u and rid:
                labels[u] = f"<{DEMO_LABELS[rid - 1]}>"
    norm = golden.Normalizer(labels)
    root_paths = {p.split("/instances/")[0] for p in _strings(out) if "/instances/" in p}
    for i, rp in enumerate(sorted(root_paths)):
        norm.add(rp, "<root>" if i == 0 else f"<root-{i}>")
    for u in sorted(_uuids(out) - set(labels)):
        norm.add(u, "<uuid>")             # volumes, migrations, pass ids: random order
    res = norm(out)
    _replace_key(res, "journal_id", lambda _v: "<journal_id>")  # follows libvirt's order
    res["dirs_left"].sort()
    for p in res["passes"]:
        for k in ("findings", "actions"):
            p[k] = sorted(p[k], key=golden.dumps)
    golden.check("demo_command_json", {"exit_code": r.returncode, "stdout": res,
                                       "stderr": r.stderr.splitlines()})


def _strings(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from _strings(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _strings(v)
    elif isinstance(obj, str):
        yield obj


def _uuids(obj) -> set[str]:
    return {u for s in _strings(obj) for u in golden.UUID_RE.findall(s)}


# --------------------------------------------------------------------------
# network plumbing (netns, OVS, test driver): marked functional
# --------------------------------------------------------------------------

def _net_ids(head: str) -> tuple:
    """Ids for one run: a random head shared by all (unique names on the shared OVSDB)
    and a fixed tail, so that any order that follows names or uuids is the same in
    every run."""
    def port(i: int) -> str:
        return f"{head[:6]}{i:02x}-{i:02x}00-4000-8000-{i:012x}"

    def inst(i: int) -> str:
        return f"{head[6:14]}-0000-4000-8000-{i:012x}"
    return port, inst


@pytest.mark.functional
@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_network_passes(tmp_path, nova_db, netns, ovs_bridge):  # noqa: F811
    """Audit, reap and a second reap over a scene with every network case of the
    functional suite: a live instance's hybrid VIF (kept), a deleted instance's
    hybrid plumbing (leaked_vif, reaped after the grace), an unknown instance's direct
    port (leaked_vif), a running-deleted domain with its hybrid VIF (one teardown:
    destroy_domain, unplug_vifs, undefine_domain), a hybrid VIF without OVS port
    (nothing says whose) and devices/ports that are not Nova's (never listed). (An
    instance with malformed network_info turns every leak into a log: kept out, so
    that the leaks here are reaped.)"""
    import datetime

    import libvirt

    from tests.fixtures import netplumb as npl
    from tests.fixtures import novadb

    head = uuidlib.uuid4().hex
    port, inst = _net_ids(head)
    host = f"ft-gm-{head[14:22]}"
    eng = nova_db.engine
    novadb.add_compute_node(eng, host)
    old = novadb.utcnow() - datetime.timedelta(days=2)
    norm = golden.Normalizer({str(tmp_path): "<tmp>", netns: "<netns>",
                              ovs_bridge: "<br-int>", host: "<host>",
                              head[6:14]: "<run>"})   # novadb names rows after the uuid
    for i, role in enumerate(("live", "deleted", "unknown", "running_deleted", "malformed",
                              "unowned", "extra"), start=1):
        norm.add(port(i), f"<port-{role}>")
        norm.add(port(i)[:11], f"<pfx-{role}>")
        norm.add(inst(i), f"<vm-{role}>")
    live = novadb.add_instance(eng, uuid=inst(1), host=host)["uuid"]
    novadb.add_info_cache(eng, live, [npl.vif(port(1))])
    npl.hybrid_plug(netns, ovs_bridge, port(1), live)
    gone = novadb.add_instance(eng, uuid=inst(2), host=host, deleted=True,
                               deleted_at=old)["uuid"]
    npl.hybrid_plug(netns, ovs_bridge, port(2), gone)
    npl.direct_plug(netns, ovs_bridge, port(3), inst(3))
    rd = novadb.add_instance(eng, uuid=inst(4), host=host, deleted=True,
                             deleted_at=old)["uuid"]
    npl.hybrid_plug(netns, ovs_bridge, port(4), rd, tap=False)
    npl.ip(netns, "tuntap", "add", npl.names(port(4))["tap"], "mode", "tap")
    npl.hybrid_plug(netns, ovs_bridge, port(6), ovs=False)       # no OVS port: whose?
    npl.ip(netns, "link", "add", "br-ex0", "type", "bridge")
    npl.ip(netns, "tuntap", "add", "tap0", "mode", "tap")
    npl.vsctl("--no-wait", "add-port", ovs_bridge, "eth-uplink")
    doms = [npl.domain_xml(live, "instance-00000001", npl.hybrid_interface_xml(port(1))),
            npl.domain_xml(rd, "instance-00000004", npl.hybrid_interface_xml(port(4)))]
    uri = npl.driver_node(tmp_path, doms)
    norm.add(uri.split("//", 1)[1], "<node.xml>")
    conn = libvirt.open(uri)
    r = npl.make_net_reaper(tmp_path, nova_db.url, host, netns=netns, bridge=ovs_bridge,
                            libvirt_uri=uri, connect=lambda: conn, grace_observations=2)
    try:
        passes = []
        for mode in ("audit", "reap", "reap"):
            rep = r.run_pass(mode)
            passes.append({"exit_code": rep.exit_code, "report": rep.as_dict(),
                           "table": rep.to_table().splitlines()})
        got = {
            "passes": passes,
            "audit_log": golden.audit_log(str(tmp_path / "audit.log")),
            "state": golden.journal_rows(r.state.path),
            "nova": nova_tables(eng),
            "links_left": sorted(npl.links(netns)),
            "ovs_ports_left": sorted(npl.ovs_ports(ovs_bridge)),
            "domains_left": sorted((d.name(), d.state()[0]) for d in conn.listAllDomains(0)),
        }
    finally:
        npl.close_net_reaper(r)
        conn.close()
    golden.check("network_passes", canonical(norm(got)))


# --------------------------------------------------------------------------
# iSCSI (simulated initiator, real os-brick, test driver): functional
# --------------------------------------------------------------------------

@pytest.mark.functional
@pytest.mark.parametrize("nova_db", ["sqlite"], indirect=True)
def test_iscsi_passes(tmp_path, nova_db):
    """reaper-manage audit, reap and reap again (exit codes, JSON reports, audit log,
    journal, what the simulated initiator is left with and the iscsiadm commands run)
    over the scene of test_iscsi_reaper's leak test: LUNs used by a live instance
    (single, multipath, a second LUN on a shared session: kept), a LUN of a
    detached volume on a used session (its device removed), a session of a detached
    volume (logged out) and a lone node record (deleted)."""
    from tests import iscsi_sim
    from tests.fixtures import novadb
    from tests.functional import test_iscsi_reaper as it

    iscsi_sim.require_mount_namespaces()
    sim = iscsi_sim.SimHost(str(tmp_path / "iscsi")).init()
    host = f"ft-gm-iscsi-{uuidlib.uuid4().hex[:8]}"
    eng = nova_db.engine
    novadb.add_compute_node(eng, host)
    live = novadb.add_instance(eng, host=host)["uuid"]
    vol_a, vol_b, vol_mp, vol_gone = (novadb.new_uuid() for _ in range(4))
    norm = golden.Normalizer({str(tmp_path): "<tmp>", host: "<host>", live: "<live>",
                              live[:8]: "<live8>", vol_a: "<vol-a>", vol_b: "<vol-b>",
                              vol_mp: "<vol-m>", vol_gone: "<vol-gone>"})
    P1, P2, iqn = it.P1, it.P2, it.iqn
    sim.add_target(iqn("a"), [P1], [1])
    sim.connect(P1, iqn("a"), username="u", password=it.SYSFS_SECRET)
    novadb.add_bdm(eng, live, vol_a, connection_info=novadb.iscsi_connection_info(
        vol_a, target_portal=P1, target_iqn=iqn("a"), target_lun=1))
    sim.add_target(iqn("b"), [P1], [0, 1])
    sim.connect(P1, iqn("b"))
    novadb.add_bdm(eng, live, vol_b, device_name="/dev/vdc",
                   connection_info=novadb.iscsi_connection_info(
                       vol_b, target_portal=P1, target_iqn=iqn("b"), target_lun=1))
    novadb.add_bdm(eng, live, vol_gone, device_name="/dev/vdd", deleted=True,
                   connection_info=novadb.iscsi_connection_info(
                       "x", target_portal=P1, target_iqn=iqn("b"), target_lun=0))
    sim.add_target(iqn("m"), [P1, P2], [2])
    sim.connect(P1, iqn("m"))
    sim.connect(P2, iqn("m"))
    novadb.add_bdm(eng, live, vol_mp, device_name="/dev/vde",
                   connection_info=novadb.iscsi_connection_info(
                       vol_mp, target_portal=P1, target_iqn=iqn("m"), target_lun=2,
                       target_portals=[P1, P2], target_iqns=[iqn("m"), iqn("m")],
                       target_luns=[2, 2]))
    sim.add_target(iqn("l"), [P2], [0])
    sim.connect(P2, iqn("l"))
    sim.node_new(P2, iqn("n"))
    # The live instance's domain on libvirt's test driver (a file reaper-manage opens):
    # libvirtd's qemu:///system is shared with other test runs, whose domains would
    # show up in the passes.
    disks = "".join(
        f"<disk type='block' device='disk'><source dev='{path}'/>"
        f"<target dev='{dev}' bus='virtio'/><serial>{serial}</serial></disk>"
        for path, dev, serial in ((sim.by_path(P1, iqn("a"), 1), "vdb", vol_a),
                                  (sim.by_path(P1, iqn("b"), 1), "vdc", vol_b)))
    node = tmp_path / "node.xml"
    node.write_text(demo.node_xml([demo.domain_xml(live, "instance-00000001")
                                   .replace("<devices>", "<devices>" + disks)]))
    conf = it.write_conf(tmp_path, nova_db.url, host)
    with open(conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text.replace("qemu:///system", f"test://{node}"))
    passes = []
    for mode in ("audit", "reap", "reap"):
        rep, run = it.reap(sim, conf, mode)
        passes.append({"exit_code": run.returncode, "report": rep})
    it.assert_no_secrets(tmp_path, run)
    got = {
        "passes": passes,
        "audit_log": golden.audit_log(str(tmp_path / "audit.log")),
        "state": golden.journal_rows(str(tmp_path / "state" / "reaper-state.sqlite")),
        "sessions_left": sorted(it.sessions(sim)),
        "nodes_left": sorted(it.nodes(sim)),
        # as a sorted list: the collector's session and node reads run concurrently
        "iscsiadm": sorted((c["argv"] for c in sim.commands("iscsiadm")), key=golden.dumps),
    }
    for p in got["passes"]:
        p["table"] = []
    golden.check("iscsi_passes", canonical(norm(got)))
