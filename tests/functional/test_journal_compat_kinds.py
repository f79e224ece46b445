"""Journals of the other resource kinds, written by the previous layout, resume unchanged.

Why: tests/unit/engine/test_journal_compat.py proves it for the demo host's teardowns
(domain, files, Nova DB). Issue 10 also moves the network and iSCSI code into
their own packages and may change how a plan's ``vifs`` / ``volumes`` are
(de)serialized; a teardown a crash interrupted under the old layout must still be
read, re-verified and finished the same way by the new one. Each case here is a
scene of real parts (a network namespace and OVS bridge of the test's own,
libvirt's test driver, SQLite Nova DB; the iSCSI simulator; the OpenStack test
stack for a reclaim's service steps) whose reap pass was killed at one step of one
teardown, right after the step was journaled ``started`` (``before``) or right
after it ran (``after``). The service-step scene is made again with new ids on the
stack (the saved files name them ``@UUID@``, ``@NOVA_PORT@``...), and what the
crash had done there (release_ports) is redone with the admin API, never with the
reaper's own service code.

Saved per case under tests/golden/journal/<case>/ (literals that differ per run
are written as ``@NAME@`` and substituted on loading: the temporary root, the
namespace, the bridge, the head of the port ids, which must be unique on the
shared OVSDB): the state DB and the Nova DB as SQL dumps, the test driver's node
XML as the crash left it, ``scene.json`` (what was built and what of it was still
there at the crash) and ``expected.json``: the resumed pass (normalized) and the
end state. The test rebuilds the scene, deletes what the crash had already
removed, loads the saved journal and resumes it with the code under test.

``REAPER_GOLDEN_REGEN=1`` writes the cases again WITH THE CURRENT CODE: do that only
before a layout change, never to make this test pass after one.
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import sqlite3
import uuid as uuidlib

import pytest
import sqlalchemy as sa

from reaper.executor import teardown
from reaper.nova import schema
from tests.fixtures import golden
from tests.fixtures import netplumb as npl
from tests.fixtures import novadb
from tests.fixtures.netplumb import netns, ovs_bridge  # noqa: F401
from tests.unit.engine.test_journal_compat import Crash, _dump

pytestmark = pytest.mark.functional

CASE_DIR = golden.GOLDEN_DIR / "journal"
HOST = "gm2-compute"
OLD = datetime.datetime(2026, 1, 1, 0, 0, 0)      # long before any run: deleted long ago


def _crash_at(monkeypatch, target: str, step: str, when: str) -> None:
    """Make ``teardown._run_step`` die at ``step`` of the plan of ``target``."""
    real = teardown._run_step

    def crashing(ctx, plan, s, *a, **kw):
        if plan.instance_uuid == target and s == step:
            if when == "before":
                raise Crash(s)
            real(ctx, plan, s, *a, **kw)
            raise Crash(s)
        return real(ctx, plan, s, *a, **kw)

    monkeypatch.setattr(teardown, "_run_step", crashing)


def _load_sql(path: str, text: str) -> None:
    db = sqlite3.connect(path)
    try:
        db.executescript(text)
    finally:
        db.close()


def _subst(text: str, lits: dict[str, str]) -> str:
    for k in sorted(lits, key=len, reverse=True):
        text = text.replace(k, lits[k])
    return text


def _saved_plan(out) -> dict:
    """The plan JSON of the saved unfinished entry (as the old code wrote it)."""
    db = sqlite3.connect(":memory:")
    try:
        db.executescript((out / "state.sql").read_text())
        rows = db.execute("SELECT plan FROM journal WHERE status = 'running'").fetchall()
    finally:
        db.close()
    assert len(rows) == 1, rows
    return json.loads(rows[0][0])


def _journal_of(state: dict, key: str) -> tuple[list, list]:
    js = [j for j in state["journal"] if j["instance_uuid"] == key]
    ids = {j["id"] for j in js}
    return js, [s for s in state["journal_steps"] if s["journal_id"] in ids]


# --------------------------------------------------------------------------
# network: leaked VIF (R11) and a running-deleted domain with its VIF
# --------------------------------------------------------------------------

def _ids(head6: str):
    def port(i: int) -> str:
        return f"{head6}{i:02x}-{i:02x}00-4000-8000-{i:012x}"

    def inst(i: int) -> str:
        return f"9a2e0000-0000-4000-8000-{i:012x}"
    return port, inst


NET_CASES = [
    ("leaked_vif", "unplug_vifs", "before"),
    ("leaked_vif", "unplug_vifs", "after"),
    ("running_deleted_vif", "unplug_vifs", "before"),
    ("running_deleted_vif", "unplug_vifs", "after"),
]


def _net_case_id(c) -> str:
    return f"{c[0]}-{c[1]}-{c[2]}"


def _net_target(kind: str, port, inst) -> str:
    return f"vif:{port(2)[:11]}" if kind == "leaked_vif" else inst(4)


def _net_plumb(ns: str, br: str, port, inst) -> None:
    """The devices and OVS ports of the scene, always in this order (a fresh
    namespace numbers them the same way each time: the plans hold ifindexes):
    a live instance's hybrid VIF, a deleted instance's hybrid VIF (leaked_vif), a
    running-deleted domain's hybrid VIF."""
    npl.hybrid_plug(ns, br, port(1), inst(1))
    npl.hybrid_plug(ns, br, port(2), inst(2))
    npl.hybrid_plug(ns, br, port(4), inst(4), tap=False)
    npl.ip(ns, "tuntap", "add", npl.names(port(4))["tap"], "mode", "tap")


def _net_domains(port, inst) -> dict[str, str]:
    return {"instance-00000001": npl.domain_xml(inst(1), "instance-00000001",
                                                npl.hybrid_interface_xml(port(1))),
            "instance-00000004": npl.domain_xml(inst(4), "instance-00000004",
                                                npl.hybrid_interface_xml(port(4)))}


def _node_xml(conn, domain_xml: dict[str, str]) -> str:
    """The test driver's domains as the pass left them (its changes live in the
    connection only)."""
    import re
    left = []
    for dom in sorted(conn.listAllDomains(0), key=lambda d: d.name()):
        left.append(re.sub(r"<test:runstate>\d+</test:runstate>",
                           f"<test:runstate>{dom.state()[0]}</test:runstate>",
                           domain_xml[dom.name()]))
    return "<node>" + "".join(left) + "</node>"


def _net_record(case, root, ns, br, monkeypatch) -> None:
    import libvirt
    kind, step, when = case
    head6 = uuidlib.uuid4().hex[:6]
    port, inst = _ids(head6)
    nova = os.path.join(root, "nova.sqlite")
    eng = sa.create_engine(f"sqlite:///{nova}")
    schema.create_all(eng)
    novadb.add_compute_node(eng, HOST)
    novadb.add_instance(eng, uuid=inst(1), host=HOST)
    novadb.add_info_cache(eng, inst(1), [npl.vif(port(1))])
    novadb.add_instance(eng, uuid=inst(2), host=HOST, deleted=True, deleted_at=OLD)
    novadb.add_instance(eng, uuid=inst(4), host=HOST, deleted=True, deleted_at=OLD)
    eng.dispose()
    _net_plumb(ns, br, port, inst)
    doms = _net_domains(port, inst)
    node = os.path.join(root, "node.xml")
    with open(node, "w") as f:
        f.write("<node>" + "".join(doms.values()) + "</node>")
    conn = libvirt.open(f"test://{node}")
    r = npl.make_net_reaper(_P(root), f"sqlite:///{nova}", HOST, netns=ns, bridge=br,
                            libvirt_uri=f"test://{node}", connect=lambda: conn)
    try:
        _crash_at(monkeypatch, _net_target(kind, port, inst), step, when)
        with pytest.raises(Crash):
            r.run_pass("reap")
        monkeypatch.undo()
        r.state._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        lits = {root: "@ROOT@", ns: "@NETNS@", br: "@BR@", head6: "@PH@"}
        out = CASE_DIR / _net_case_id(case)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        (out / "state.sql").write_text(_subst(_dump(r.state.path), lits))
        (out / "nova.sql").write_text(_subst(_dump(nova), lits))
        (out / "node.xml").write_text(_subst(_node_xml(conn, doms), lits))
        scene = {"kind": kind, "step": step, "when": when,
                 "links_at_crash": sorted(npl.links(ns)),
                 "ovs_ports_at_crash": sorted(npl.ovs_ports(br))}
        (out / "scene.json").write_text(_subst(golden.dumps(scene), lits))
    finally:
        npl.close_net_reaper(r)
        conn.close()


class _P(str):
    """A str path that also answers ``/`` (what make_net_reaper expects of tmp_path)."""

    def __truediv__(self, other):
        return _P(os.path.join(self, other))


def _net_resume(case, root, ns, br) -> dict:
    """Rebuild the scene, load the saved journal, resume it; the end state."""
    import libvirt
    out = CASE_DIR / _net_case_id(case)
    head6 = uuidlib.uuid4().hex[:6]
    port, inst = _ids(head6)
    lits = {"@ROOT@": root, "@NETNS@": ns, "@BR@": br, "@PH@": head6}
    scene = json.loads(_subst((out / "scene.json").read_text(), lits))
    # the scene as built, then without what the crash had already removed
    _net_plumb(ns, br, port, inst)
    for p in sorted(set(npl.ovs_ports(br)) - set(scene["ovs_ports_at_crash"])):
        npl.vsctl("--no-wait", "--if-exists", "del-port", br, p)
    for dev in sorted(set(npl.links(ns)) - set(scene["links_at_crash"])):
        npl.ip(ns, "link", "del", dev, check=False)     # a veth's peer goes with it
    assert sorted(npl.links(ns)) == scene["links_at_crash"]
    assert sorted(npl.ovs_ports(br)) == scene["ovs_ports_at_crash"]
    nova = os.path.join(root, "nova.sqlite")
    _load_sql(nova, _subst((out / "nova.sql").read_text(), lits))
    os.makedirs(os.path.join(root, "state"), mode=0o700)
    from reaper import state as state_mod
    _load_sql(os.path.join(root, "state", state_mod.DB_NAME),
              _subst((out / "state.sql").read_text(), lits))
    node = os.path.join(root, "node.xml")
    with open(node, "w") as f:
        f.write(_subst((out / "node.xml").read_text(), lits))
    conn = libvirt.open(f"test://{node}")
    r = npl.make_net_reaper(_P(root), f"sqlite:///{nova}", HOST, netns=ns, bridge=br,
                            libvirt_uri=f"test://{node}", connect=lambda: conn)
    target = _net_target(case[0], port, inst)
    try:
        before = {e.id: dict(e.steps) for e in r.state.unfinished(teardown.steps_for)}
        rep = r.run_pass("reap")
        again = r.run_pass("reap")
        state = golden.journal_rows(r.state.path)
        js, steps = _journal_of(state, target)
        got = {
            "unfinished_before": before,
            "resume_pass": {"exit_code": rep.exit_code, "actions": rep.actions,
                            "findings": rep.findings, "errors": rep.errors,
                            "guards": rep.guards, "journal": rep.journal},
            "next_pass": {"exit_code": again.exit_code, "actions": again.actions,
                          "findings": again.findings},
            "journal_of_target": js,
            "steps_of_target": steps,
            "unfinished_after": len(r.state.unfinished(teardown.steps_for)),
            "links_left": sorted(npl.links(ns)),
            "ovs_ports_left": sorted(npl.ovs_ports(br)),
            "domains_left": sorted((d.name(), d.state()[0]) for d in conn.listAllDomains(0)),
        }
    finally:
        npl.close_net_reaper(r)
        conn.close()
    norm = golden.Normalizer({root: "<root>", ns: "<netns>", br: "<br-int>"})
    for i, role in ((1, "live"), (2, "deleted"), (4, "running_deleted")):
        norm.add(port(i), f"<port-{role}>")
        norm.add(port(i)[:11], f"<pfx-{role}>")
        norm.add(inst(i), f"<vm-{role}>")
    return norm(got)


@pytest.mark.parametrize("case", NET_CASES, ids=[_net_case_id(c) for c in NET_CASES])
def test_saved_network_journal_resumes_unchanged(case, tmp_path, netns, ovs_bridge,  # noqa: F811
                                                 monkeypatch):
    out = CASE_DIR / _net_case_id(case)
    if golden.REGEN:
        rec = str(tmp_path / "rec")
        os.makedirs(rec)
        ns = f"reaper-t-{uuidlib.uuid4().hex[:8]}"
        npl.sh("ip", "netns", "add", ns)
        br = f"br-int-{uuidlib.uuid4().hex[:6]}"
        npl.vsctl("--no-wait", "--", "add-br", br, "--", "set", "bridge", br,
                  "datapath_type=netdev")
        try:
            npl.ip(ns, "link", "set", "lo", "up")
            _net_record(case, rec, ns, br, monkeypatch)
        finally:
            npl.sh("ip", "netns", "del", ns, check=False)
            npl.vsctl("--if-exists", "del-br", br, check=False)
    assert (out / "state.sql").exists(), \
        f"no saved journal {out}: REAPER_GOLDEN_REGEN=1 records it (old layout only)"
    target_plan = _saved_plan(out)
    assert target_plan["vifs"], "the saved plan has no vifs"
    root = str(tmp_path / "resume")
    os.makedirs(root)
    res = _net_resume(case, root, netns, ovs_bridge)
    got = res
    assert got["unfinished_before"], "the saved entry was not read as unfinished"
    assert got["unfinished_after"] == 0
    assert [j["status"] for j in got["journal_of_target"]] == ["done"]
    role = "deleted" if case[0] == "leaked_vif" else "running_deleted"
    assert not any(f"<pfx-{role}>" in x for x in got["links_left"] + got["ovs_ports_left"])
    # the live instance's VIF and domain are untouched
    live = {f"{d}<pfx-live>" for d in ("qbr", "qvb", "qvo", "tap")}
    assert live <= set(got["links_left"]) and "qvo<pfx-live>" in got["ovs_ports_left"]
    assert ("instance-00000001", 1) in [tuple(d) for d in got["domains_left"]]
    if case[0] == "running_deleted_vif":
        assert "instance-00000004" not in [d[0] for d in got["domains_left"]]
    golden.check(f"journal/{_net_case_id(case)}/expected", got)


# --------------------------------------------------------------------------
# iSCSI: a leaked session (R12) and a running-deleted domain with its volume
# --------------------------------------------------------------------------

ISCSI_CASES = [
    ("leaked_iscsi", "disconnect_volumes", "before"),
    ("leaked_iscsi", "disconnect_volumes", "after"),
    ("running_deleted_iscsi", "disconnect_volumes", "before"),
    ("running_deleted_iscsi", "disconnect_volumes", "after"),
]
VM_LIVE, VM_RD = "9a2e0000-0000-4000-8000-00000000000a", "9a2e0000-0000-4000-8000-00000000000d"
VOL_LIVE, VOL_RD = "9a2e0000-0000-4000-8000-0000000000a1", "9a2e0000-0000-4000-8000-0000000000d1"
# files of the simulated host that are not the scene: the command log, the lock
SIM_SKIP = ("sim/commands.log", "sim/lock")


def _iscsi_case_id(c) -> str:
    return f"{c[0]}-{c[1]}-{c[2]}"


def _sim_tree(root: str) -> dict[str, dict]:
    """The simulated host's tree as text: dirs, symlinks (targets), files (contents)."""
    out = {}
    for d, subdirs, fs in os.walk(root):
        for name in subdirs + fs:
            p = os.path.join(d, name)
            rel = os.path.relpath(p, root)
            if rel in SIM_SKIP:
                continue
            if os.path.islink(p):
                out[rel] = {"link": os.readlink(p)}
            elif os.path.isdir(p):
                out[rel] = {"dir": True}
            else:
                with open(p, "rb") as fh:
                    data = fh.read()
                out[rel] = {"zeros": len(data)} if data and not data.strip(b"\0") \
                    else {"text": data.decode("latin-1")}
    return dict(sorted(out.items()))


def _sim_untree(root: str, tree: dict[str, dict]) -> None:
    os.makedirs(root)
    for rel, e in tree.items():         # sorted: a directory before what is in it
        p = os.path.join(root, rel)
        if "dir" in e:
            os.makedirs(p, exist_ok=True)
        elif "link" in e:
            os.symlink(e["link"], p)
        else:
            with open(p, "wb") as f:
                f.write(b"\0" * e["zeros"] if "zeros" in e else e["text"].encode("latin-1"))


def _iscsi_domains(sim) -> dict[str, str]:
    from reaper import demo
    from tests.functional import test_iscsi_reaper as it

    def disk(path, dev, serial):
        return (f"<disk type='block' device='disk'><source dev='{path}'/>"
                f"<target dev='{dev}' bus='virtio'/><serial>{serial}</serial></disk>")
    return {
        "instance-0000000a": demo.domain_xml(VM_LIVE, "instance-0000000a").replace(
            "<devices>", "<devices>" + disk(sim.by_path(it.P1, it.iqn("a"), 1), "vdb", VOL_LIVE)),
        "instance-0000000d": demo.domain_xml(VM_RD, "instance-0000000d").replace(
            "<devices>", "<devices>" + disk(sim.by_path(it.P1, it.iqn("r"), 1), "vdb", VOL_RD)),
    }


def _iscsi_conf(root: str, node: str) -> str:
    import pathlib

    from tests.functional import test_iscsi_reaper as it
    conf = it.write_conf(pathlib.Path(root), f"sqlite:///{root}/nova.sqlite", HOST)
    with open(conf) as f:
        text = f.read()
    with open(conf, "w") as f:
        f.write(text.replace("qemu:///system", f"test://{node}"))
    return conf


def _iscsi_record(case, root: str) -> None:
    import subprocess
    import sys

    from reaper import state as state_mod
    from tests import iscsi_sim
    from tests.functional import test_iscsi_reaper as it
    kind, step, when = case
    sim = iscsi_sim.SimHost(os.path.join(root, "iscsi")).init()
    nova = os.path.join(root, "nova.sqlite")
    eng = sa.create_engine(f"sqlite:///{nova}")
    schema.create_all(eng)
    novadb.add_compute_node(eng, HOST)
    # a live instance's LUN (kept in every case)
    novadb.add_instance(eng, uuid=VM_LIVE, host=HOST)
    sim.add_target(it.iqn("a"), [it.P1], [1])
    sim.connect(it.P1, it.iqn("a"))
    novadb.add_bdm(eng, VM_LIVE, VOL_LIVE, connection_info=novadb.iscsi_connection_info(
        VOL_LIVE, target_portal=it.P1, target_iqn=it.iqn("a"), target_lun=1))
    doms = _iscsi_domains(sim)
    if kind == "leaked_iscsi":
        # a session of a detached volume: no BDM, no domain names it
        sim.add_target(it.iqn("l"), [it.P2], [0])
        sim.connect(it.P2, it.iqn("l"))
        del doms["instance-0000000d"]
        target = None
    else:
        # a deleted instance whose domain still runs with its LUN
        novadb.add_instance(eng, uuid=VM_RD, host=HOST, deleted=True, deleted_at=OLD)
        sim.add_target(it.iqn("r"), [it.P1], [1])
        sim.connect(it.P1, it.iqn("r"))
        target = VM_RD
    eng.dispose()
    node = os.path.join(root, "node.xml")
    with open(node, "w") as f:
        f.write("<node>" + "".join(doms.values()) + "</node>")
    conf = _iscsi_conf(root, node)
    sim_before = _sim_tree(sim.root)
    kill = f"--kill-{'before' if when == 'before' else 'unjournaled'}"
    cmd = iscsi_sim.ns_argv(sim.root, [
        sys.executable, "-m", "tests.functional.faultmatrix.killer", kill, step,
        *(["--only", target] if target else []),
        "--", "--config-file", conf, "reap", "--format", "json"])
    env = iscsi_sim.env(sim.root, dict(os.environ, PYTHONPATH=os.getcwd()))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == -9, (r.returncode, r.stderr[-4000:])
    state_db = os.path.join(root, "state", state_mod.DB_NAME)
    db = sqlite3.connect(state_db)
    try:
        (key,), = db.execute("SELECT instance_uuid FROM journal WHERE status='running'")
        (jid,), = db.execute("SELECT id FROM journal WHERE status='running'")
        done = {s for (s,) in db.execute("SELECT step FROM journal_steps WHERE journal_id=? "
                                         "AND status='done'", (jid,))}
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        db.close()
    # the test driver's changes live in the killed process only: the node as it left it
    left = []
    for name, xml in doms.items():
        if name == "instance-0000000d" and "undefine_domain" in done:
            continue
        if name == "instance-0000000d" and "destroy_domain" in done:
            xml = xml.replace("<test:runstate>1</test:runstate>",
                              "<test:runstate>5</test:runstate>")
        left.append(xml)
    lits = {root: "@ROOT@"}
    out = CASE_DIR / _iscsi_case_id(case)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    (out / "state.sql").write_text(_subst(_dump(state_db), lits))
    (out / "nova.sql").write_text(_subst(_dump(nova), lits))
    (out / "node.xml").write_text(_subst("<node>" + "".join(left) + "</node>", lits))
    (out / "sim.json").write_text(_subst(golden.dumps(_sim_tree(sim.root)), lits))
    scene = {"kind": kind, "step": step, "when": when, "target": key,
             "sessions_built": sorted(_sessions(sim_before)),
             "sessions_at_crash": sorted(it.sessions(sim)), "nodes_at_crash": sorted(it.nodes(sim))}
    (out / "scene.json").write_text(_subst(golden.dumps(scene), lits))


def _persist_node(node: str, state_db: str) -> None:
    """What a hypervisor would keep and the test driver (its changes live in the
    process) forgets: the running-deleted domain is gone once its teardown undefined it."""
    import re
    db = sqlite3.connect(state_db)
    try:
        gone = db.execute("SELECT 1 FROM journal_steps s JOIN journal j ON j.id=s.journal_id "
                          "WHERE j.instance_uuid=? AND s.step='undefine_domain' "
                          "AND s.status='done'", (VM_RD,)).fetchone()
    finally:
        db.close()
    if gone:
        with open(node) as f:
            text = f.read()
        text = re.sub(r"<domain (?:(?!</domain>).)*" + VM_RD + r".*?</domain>", "", text,
                      flags=re.S)
        with open(node, "w") as f:
            f.write(text)


def _sessions(tree: dict) -> set[str]:
    return {rel.split("/")[-1] for rel in tree if rel.startswith("sys/class/iscsi_session/")}


def _iscsi_resume(case, root: str) -> dict:
    """Rebuild the simulated host and the rest, load the saved journal, resume it with
    reaper-manage (the production command) in the simulated host's namespace."""
    from reaper import state as state_mod
    from tests import iscsi_sim
    from tests.functional import test_iscsi_reaper as it
    out = CASE_DIR / _iscsi_case_id(case)
    lits = {"@ROOT@": root}
    scene = json.loads(_subst((out / "scene.json").read_text(), lits))
    _sim_untree(os.path.join(root, "iscsi"),
                json.loads(_subst((out / "sim.json").read_text(), lits)))
    sim = iscsi_sim.SimHost(os.path.join(root, "iscsi")).init()
    assert [list(x) for x in sorted(it.sessions(sim))] == scene["sessions_at_crash"]
    assert [list(x) for x in sorted(it.nodes(sim))] == scene["nodes_at_crash"]
    _load_sql(os.path.join(root, "nova.sqlite"), _subst((out / "nova.sql").read_text(), lits))
    os.makedirs(os.path.join(root, "state"), mode=0o700)
    _load_sql(os.path.join(root, "state", state_mod.DB_NAME),
              _subst((out / "state.sql").read_text(), lits))
    node = os.path.join(root, "node.xml")
    with open(node, "w") as f:
        f.write(_subst((out / "node.xml").read_text(), lits))
    conf = _iscsi_conf(root, node)
    passes = []
    for mode in ("reap", "reap"):
        rep, run = it.reap(sim, conf, mode)
        passes.append({"exit_code": run.returncode, "actions": rep["actions"],
                       "findings": rep["findings"], "errors": rep.get("errors")})
        _persist_node(node, os.path.join(root, "state", state_mod.DB_NAME))
    state = golden.journal_rows(os.path.join(root, "state", state_mod.DB_NAME))
    js, steps = _journal_of(state, scene["target"])
    db = sqlite3.connect(os.path.join(root, "state", state_mod.DB_NAME))
    try:
        unfinished = db.execute("SELECT count(*) FROM journal WHERE status='running'").fetchone()
    finally:
        db.close()
    got = {
        "passes": passes,
        "journal_of_target": js,
        "steps_of_target": steps,
        "unfinished_after": unfinished[0],
        "sessions_left": sorted(it.sessions(sim)),
        "nodes_left": sorted(it.nodes(sim)),
        "iscsiadm": sorted((c["argv"] for c in sim.commands("iscsiadm")), key=golden.dumps),
        "audit_log": golden.audit_log(os.path.join(root, "audit.log")),
    }
    norm = golden.Normalizer({root: "<root>", VM_LIVE: "<vm-live>", VM_RD: "<vm-rd>",
                              VOL_LIVE: "<vol-live>", VOL_RD: "<vol-rd>"})
    return norm(got)


@pytest.mark.parametrize("case", ISCSI_CASES, ids=[_iscsi_case_id(c) for c in ISCSI_CASES])
def test_saved_iscsi_journal_resumes_unchanged(case, tmp_path):
    from tests import iscsi_sim
    from tests.functional import test_iscsi_reaper as it
    iscsi_sim.require_mount_namespaces()
    out = CASE_DIR / _iscsi_case_id(case)
    if golden.REGEN:
        rec = str(tmp_path / "rec")
        os.makedirs(rec)
        _iscsi_record(case, rec)
    assert (out / "state.sql").exists(), \
        f"no saved journal {out}: REAPER_GOLDEN_REGEN=1 records it (old layout only)"
    assert _saved_plan(out)["volumes"], "the saved plan has no volumes"
    root = str(tmp_path / "resume")
    os.makedirs(root)
    got = _iscsi_resume(case, root)
    assert got["journal_of_target"] and \
        [j["status"] for j in got["journal_of_target"]] == ["done"]
    assert got["unfinished_after"] == 0
    live = [it.P1, it.iqn("a")]
    assert live in got["sessions_left"], "the live instance's session was touched"
    gone = [it.P2, it.iqn("l")] if case[0] == "leaked_iscsi" else [it.P1, it.iqn("r")]
    assert gone not in got["sessions_left"] and gone not in got["nodes_left"]
    golden.check(f"journal/{_iscsi_case_id(case)}/expected", got)


# --------------------------------------------------------------------------
# service steps: a reclaim killed between release_ports and detach_volumes, resumed
# against the real OpenStack test stack (tools/openstack)
# --------------------------------------------------------------------------

SERVICE_CASES = [
    ("reclaim_services", "release_ports", "after"),
    ("reclaim_services", "detach_volumes", "before"),
]
# the ids of one scene's OpenStack resources, written as @NAME@ in the saved files
SCENE_IDS = ("uuid", "nova_port", "pre_port", "new_volume", "attachment_id", "old_volume")


def _svc_case_id(c) -> str:
    return f"{c[0]}-{c[1]}-{c[2]}"


def _svc_literals(inst, host) -> dict[str, str]:
    lits = {getattr(inst, k): f"@{k.upper()}@" for k in SCENE_IDS}
    lits.update({inst.node.uuid: "@RP@", host.name: "@HOST@", str(host.tmp): "@ROOT@"})
    child = getattr(inst.node, "child_uuid", None)
    if child:
        lits[child] = "@CHILD_RP@"
    return lits


def _svc_record(case, tmp, openstack, monkeypatch) -> None:
    from tests.fixtures.steps import StepsHost, sections
    kind, step, when = case
    h = StepsHost(tmp)
    try:
        inst = h.reclaimable(openstack)
        _crash_at(monkeypatch, inst.uuid, step, when)
        r = h.reaper(sections(openstack.stack))
        try:
            with pytest.raises(Crash):
                r.run_pass("reap", dry_run=False)
            r.state._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            state_path = r.state.path
        finally:
            monkeypatch.undo()
            r.state.close()
            r.audit.close()
        lits = _svc_literals(inst, h)
        out = CASE_DIR / _svc_case_id(case)
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        (out / "state.sql").write_text(_subst(_dump(state_path), lits))
        (out / "nova.sql").write_text(_subst(_dump(str(tmp / "nova.sqlite")), lits))
        (out / "scene.json").write_text(golden.dumps(
            {"kind": kind, "step": step, "when": when,
             # what the crash had done in the services: the release_ports step ran
             "ports_released": True, "volumes_detached": False,
             "allocations_deleted": False}))
    finally:
        h.close()


def _svc_rebuild(openstack, h, scene):
    """The scene's OpenStack resources made again (new ids) as the crash left them,
    with the admin API only (never the reaper's service code)."""
    from tests.fixtures.openstack_cloud import connector
    from tests.fixtures.steps import Reclaimable
    u = novadb.new_uuid()
    node = openstack.create_compute_node(h.node)
    net, _subnet = openstack.create_network()
    nova_port = openstack.create_port(net["id"], host=h.name, device_id=u)
    pre_port = openstack.create_port(net["id"], host=h.name, device_id=u, pre_existing=True)
    new_vol = openstack.create_volume()
    att = openstack.attach_new_style(new_vol["id"], u, h.name)
    old_vol = openstack.create_volume()
    conn_info = openstack.attach_old_style(old_vol["id"], u, h.name, mountpoint="/dev/vdc")
    openstack.allocate_instance(u, node)
    if scene["ports_released"]:
        # as Nova's deallocate leaves them: its port deleted, the user's port unbound
        nt = openstack.neutron()
        nt.delete(f"/v2.0/ports/{nova_port['id']}")
        nt.put(f"/v2.0/ports/{pre_port['id']}", json={"port": {
            "binding:host_id": None, "device_id": "", "device_owner": ""}})
    assert not scene["volumes_detached"] and not scene["allocations_deleted"]
    inst = Reclaimable(u, nova_port["id"], pre_port["id"], new_vol["id"], att["id"],
                       old_vol["id"], node)
    return inst, {**conn_info, "connector": connector(h.name)}


def _svc_resume(case, tmp, openstack) -> dict:
    from reaper import state as state_mod
    from tests.fixtures.steps import StepsHost, assert_as_nova_leaves_a_reclaim, sections
    out = CASE_DIR / _svc_case_id(case)
    scene = json.loads((out / "scene.json").read_text())
    name = f"steps-{uuidlib.uuid4().hex[:8]}"
    h = StepsHost(tmp, name=name)         # creates nova.sqlite's tables: dropped below
    try:
        inst, conn_info = _svc_rebuild(openstack, h, scene)
        lits = {v: k for k, v in _svc_literals(inst, h).items()}
        h.engine.dispose()
        os.unlink(tmp / "nova.sqlite")
        nova_text = _subst((out / "nova.sql").read_text(), lits)
        _load_sql(str(tmp / "nova.sqlite"), nova_text)
        # the old-style BDM's connection_info is Cinder's answer of this run's attach
        bdm = schema.block_device_mapping
        with h.engine.begin() as c:
            c.execute(sa.update(bdm).where(bdm.c.volume_id == inst.old_volume)
                      .values(connection_info=json.dumps(conn_info)))
        os.makedirs(tmp / "state", mode=0o700, exist_ok=True)
        _load_sql(str(tmp / "state" / state_mod.DB_NAME),
                  _subst((out / "state.sql").read_text(), lits))
        st = state_mod.StateDB(str(tmp / "state"))
        try:
            before = {e.id: dict(e.steps) for e in st.unfinished(teardown.steps_for)}
        finally:
            st.close()
        passes = []
        for _ in range(2):
            rep = h.run(sections(openstack.stack))
            passes.append({"exit_code": rep.exit_code, "actions": rep.actions,
                           "findings": rep.findings, "errors": rep.errors})
        state = golden.journal_rows(str(tmp / "state" / state_mod.DB_NAME))
        js, steps = _journal_of(state, inst.uuid)
        assert_as_nova_leaves_a_reclaim(openstack, inst)
        row = h.row(inst.uuid)
        got = {
            "unfinished_before": before,
            "passes": passes,
            "journal_of_target": js,
            "steps_of_target": steps,
            "unfinished_after": len(h.journal()),
            "nova_row": {k: row[k] for k in ("vm_state", "task_state", "deleted")},
        }
    finally:
        h.close()
    norm = golden.Normalizer({**{k: f"<{v.strip('@').lower()}>"
                                 for k, v in _svc_literals(inst, h).items()}})
    return norm(got)


@pytest.mark.parametrize("case", SERVICE_CASES, ids=[_svc_case_id(c) for c in SERVICE_CASES])
def test_saved_service_steps_journal_resumes_unchanged(case, tmp_path, openstack,
                                                       monkeypatch):
    out = CASE_DIR / _svc_case_id(case)
    if golden.REGEN:
        rec = tmp_path / "rec"
        rec.mkdir()
        _svc_record(case, rec, openstack, monkeypatch)
    assert (out / "state.sql").exists(), \
        f"no saved journal {out}: REAPER_GOLDEN_REGEN=1 records it (old layout only)"
    plan = _saved_plan(out)
    assert plan["services"] and plan["service_facts"], "the saved plan has no service steps"
    res = tmp_path / "resume"
    res.mkdir()
    got = _svc_resume(case, res, openstack)
    assert got["unfinished_before"], "the saved entry was not read as unfinished"
    assert got["unfinished_after"] == 0
    assert [j["status"] for j in got["journal_of_target"]] == ["done"]
    assert got["nova_row"]["vm_state"] == "deleted"
    golden.check(f"journal/{_svc_case_id(case)}/expected", got)
