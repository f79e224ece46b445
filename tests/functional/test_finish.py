"""``reaper-ctl finish`` on real parts: a host reclaims an instance while Neutron,
Cinder and Placement are unreachable from it (its service steps fail; its audit record
keeps the leftovers and the instance's facts), then the host is gone (its nova-compute
not seen for hours); from a controller, the real ``reaper-ctl finish`` reads that
audit log and finishes on the real Keystone/Neutron/Cinder/Placement of the test host
(tools/openstack): the Nova-created port deleted, the pre-existing one unbound, the
new-style attachment and its delete_on_termination volume deleted, the old-style
volume detached, the allocations deleted. Dry run first (nothing changes), then
--yes, then --yes again (idempotent). The same from the record of a host with no
service section at all (no call made there, the facts recorded all the same)."""
from __future__ import annotations

import datetime
import json
import os
import pathlib
import socket
import subprocess
import sys
import tempfile

import pytest
from oslo_config import cfg

from reaper import demo
from reaper.kinds.services import plugin as service_wiring
from reaper.nova import schema as s
from reaper.conf import services as conf_services
from reaper.services import session
from tests.fixtures import novadb
from tests.fixtures.steps import StepsHost, assert_as_nova_leaves_a_reclaim
from tests.fixtures.openstack_cloud import connector

pytestmark = pytest.mark.functional

REPO = pathlib.Path(__file__).resolve().parents[2]


def _unreachable_clients():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    conf = cfg.ConfigOpts()
    conf_services.register_opts(conf)
    conf([], project="reaper-test")
    for g in ("neutron", "cinder", "placement"):
        conf.set_override("auth_type", "none", group=g)
        conf.set_override("endpoint_override", f"http://127.0.0.1:{port}", group=g)
        conf.set_override("timeout", 5, group=g)
    return session.clients_from_conf(conf)


def ctl(conf: pathlib.Path, *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "reaper.cmd.ctl", "--config-file", str(conf),
                           *args], capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


def records(path: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _no_sections():
    """The service clients of a host with no [neutron]/[cinder]/[placement] section
    (today's default): read from a real, empty config file."""
    conf = cfg.ConfigOpts()
    conf_services.register_opts(conf)
    empty = tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False)
    empty.write("[DEFAULT]\n")
    empty.close()
    try:
        conf(["--config-file", empty.name], default_config_files=[], default_config_dirs=[])
    finally:
        os.unlink(empty.name)
    return session.clients_from_conf(conf)


@pytest.fixture
def gone_host(tmp_path, openstack):
    """The demo host with one more soft-deleted instance that has real ports, volumes
    and allocations, reclaimed while the services were unreachable; then gone."""
    yield _gone_host(tmp_path, openstack, _unreachable_clients())


@pytest.fixture
def gone_host_without_sections(tmp_path, openstack):
    """The same, reclaimed by a host with no service section configured at all."""
    yield _gone_host(tmp_path, openstack, _no_sections())


def _gone_host(tmp_path, openstack, clients) -> dict:
    reaper, handles, _ = demo.build(str(tmp_path / "host"))
    eng, host = handles["engine"], demo.HOST
    uuid = novadb.new_uuid()
    net, _subnet = openstack.create_network()
    created = openstack.create_port(net["id"], host=host, device_id=uuid)
    kept = openstack.create_port(net["id"], host=host, device_id=uuid, pre_existing=True)
    new_vol, old_vol = openstack.create_volume(), openstack.create_volume()
    att = openstack.attach_new_style(new_vol["id"], uuid, host)
    conn_info = openstack.attach_old_style(old_vol["id"], uuid, host)
    node = openstack.create_compute_node(f"{host}-finish")
    openstack.allocate_instance(uuid, node)

    old = novadb.utcnow() - datetime.timedelta(days=2)
    novadb.add_instance(eng, uuid=uuid, host=host, vm_state="soft-delete", power_state=4,
                        deleted_at=old)
    novadb.add_info_cache(eng, uuid, [novadb.vif(created["id"]),
                                      {**novadb.vif(kept["id"]), "preserve_on_delete": True}])
    novadb.add_bdm(eng, uuid, volume_id=new_vol["id"], attachment_id=att["id"],
                   delete_on_termination=True, device_name="/dev/vdb")
    novadb.add_bdm(eng, uuid, volume_id=old_vol["id"], attachment_id=None,
                   connection_info=json.dumps({**conn_info, "connector": connector(host)}),
                   device_name="/dev/vdc")
    service_wiring.enable(reaper, clients=clients)
    try:
        rep = reaper.run_pass("reclaim")
    finally:
        reaper.close()
    assert novadb.get_instance(eng, uuid)["vm_state"] == "deleted", rep.to_table()
    # The host is gone: its nova-compute last reported three hours ago.
    import sqlalchemy as sa
    with eng.begin() as c:
        assert c.execute(sa.update(s.services).where(s.services.c.host == host).values(
            last_seen_up=novadb.utcnow() - datetime.timedelta(hours=3),
            updated_at=novadb.utcnow() - datetime.timedelta(hours=3))).rowcount == 1
    conf = tmp_path / "reaper-ctl.conf"
    conf.write_text(f"[database]\nconnection = {eng.url.render_as_string(False)}\n\n"
                    f"[reaper]\naudit_log = {tmp_path / 'finish-audit.log'}\n\n")
    openstack.stack.write_reaper_config(conf, group_users={"cinder": "reaper-admin"})
    return dict(uuid=uuid, conf=conf, log=pathlib.Path(handles["audit_log"]),
                finish_log=tmp_path / "finish-audit.log", created=created, kept=kept,
                new_vol=new_vol, old_vol=old_vol, att=att, node=node)


def test_finish_does_what_a_gone_host_left_with_the_hosts_own_steps(gone_host, openstack):
    g = gone_host
    u = g["uuid"]
    (left,) = [r["evidence"]["controller_leftovers"] for r in records(g["log"])
               if r["event"] == "action" and r["instance_uuid"] == u]
    assert {k: v["status"] for k, v in left["services"].items()} == {
        "network": "failed", "block-storage": "failed", "placement": "failed"}

    # dry run (the default): reported, nothing changed
    r = ctl(g["conf"], "finish", str(g["log"]), "--instance", u)
    assert r.returncode == 3, r.stdout + r.stderr
    assert "DRY RUN" in r.stdout and r.stdout.count(u) == 3
    assert openstack.port(g["created"]["id"]) is not None
    assert openstack.volume(g["new_vol"]["id"])["status"] == "in-use"
    assert openstack.allocations(u)
    dry = [x for x in records(g["finish_log"]) if x["event"] == "action"]
    assert {(x["action"], x["result"]) for x in dry} == {
        ("release_ports", "dry_run"), ("detach_volumes", "dry_run"),
        ("delete_allocations", "dry_run")}

    # --yes: the same steps the host runs
    r = ctl(g["conf"], "--format", "json", "finish", str(g["log"]), "--instance", u, "--yes")
    assert r.returncode == 4, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert {d["step"]: d["result"] for d in out["decisions"]} == {
        "release_ports": "done", "detach_volumes": "done", "delete_allocations": "done"}
    assert openstack.port(g["created"]["id"]) is None                   # Nova's: deleted
    kept = openstack.port(g["kept"]["id"])                               # the user's: unbound
    assert kept is not None and kept["device_id"] == "" and not kept["binding:host_id"]
    gone = openstack.volume(g["new_vol"]["id"])
    assert gone is None or gone["status"] == "deleting"
    openstack.wait_volume(g["old_vol"]["id"], "available", timeout=300)
    assert openstack.allocations(u) == {}
    done = [x for x in records(g["finish_log"]) if x["event"] == "action"
            and x["result"] == "done"]
    assert len(done) == 3 and all(x["classification"] == "controller_leftover"
                                  and x["instance_uuid"] == u and x["evidence"]["step"]
                                  and x["evidence"]["recorded_by"] == demo.HOST for x in done)

    # again: everything is gone already, which is success
    r = ctl(g["conf"], "finish", str(g["log"]), "--instance", u, "--yes")
    assert r.returncode == 4, r.stdout + r.stderr
    assert openstack.port(g["kept"]["id"]) is not None                  # never deleted


def test_finish_acts_only_on_deleted_instances_of_gone_hosts(gone_host, openstack):
    g = gone_host
    u = g["uuid"]
    eng_url = g["conf"].read_text().split("connection = ", 1)[1].split("\n", 1)[0]
    import sqlalchemy as sa
    eng = sa.create_engine(eng_url)
    try:
        # A restored row (an operator's reset) is not finished from here.
        with eng.begin() as c:
            c.execute(sa.update(s.instances).where(s.instances.c.uuid == u)
                      .values(deleted=0, vm_state="active"))
        r = ctl(g["conf"], "finish", str(g["log"]), "--instance", u, "--yes")
        assert r.returncode == 3 and "not deleted" in r.stdout, r.stdout + r.stderr
        assert openstack.port(g["created"]["id"]) is not None
        # Deleted again, but the host is back up: its own journal retries.
        with eng.begin() as c:
            c.execute(sa.update(s.instances).where(s.instances.c.uuid == u)
                      .values(deleted=s.instances.c.id, vm_state="deleted"))
            c.execute(sa.update(s.services).where(s.services.c.host == demo.HOST)
                      .values(last_seen_up=novadb.utcnow(), updated_at=novadb.utcnow()))
        r = ctl(g["conf"], "finish", str(g["log"]), "--instance", u, "--yes",
                "--down-after", "3600")     # a slow test host: 'up' is an hour here
        assert r.returncode == 3 and "is up" in r.stdout, r.stdout + r.stderr
        assert openstack.port(g["created"]["id"]) is not None
    finally:
        eng.dispose()
    assert all(x["result"] == "skipped" for x in records(g["finish_log"])
               if x["event"] == "action")


def test_finish_does_what_a_host_without_service_sections_left(gone_host_without_sections,
                                                                openstack):
    """A host with no [neutron]/[cinder]/[placement] section made no call and no journal
    step, but recorded the facts; reaper-ctl finish --yes then leaves Neutron, Cinder
    and Placement as Nova's delete would."""
    g = gone_host_without_sections
    u = g["uuid"]
    (rec,) = [r for r in records(g["log"])
              if r["event"] == "action" and r["instance_uuid"] == u]
    assert not {s for s, _ in rec["evidence"]["steps"]} & {
        "release_ports", "detach_volumes", "delete_allocations"}
    left = rec["evidence"]["controller_leftovers"]
    assert {k: v["status"] for k, v in left["services"].items()} == {
        "network": "not_configured", "block-storage": "not_configured",
        "placement": "not_configured"}
    assert left["facts"]["uuid"] == u and len(left["facts"]["ports"]) == 2
    assert "chap" not in json.dumps(rec).lower()
    # the host touched nothing outside itself
    assert openstack.port(g["created"]["id"]) is not None
    assert openstack.volume(g["new_vol"]["id"])["status"] == "in-use"
    assert openstack.allocations(u)

    r = ctl(g["conf"], "--format", "json", "finish", str(g["log"]), "--instance", u, "--yes")
    assert r.returncode == 4, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert {d["step"]: d["result"] for d in out["decisions"]} == {
        "release_ports": "done", "detach_volumes": "done", "delete_allocations": "done"}
    assert openstack.port(g["created"]["id"]) is None                   # Nova's: deleted
    kept = openstack.port(g["kept"]["id"])                               # the user's: unbound
    assert kept is not None and kept["device_id"] == "" and kept["device_owner"] == ""
    assert not kept["binding:host_id"]
    gone = openstack.volume(g["new_vol"]["id"])                          # d_o_t: deleted
    assert gone is None or gone["status"] == "deleting"
    old = openstack.wait_volume(g["old_vol"]["id"], "available", timeout=300)
    assert not old["attachments"]                                         # detached, kept
    assert openstack.allocations(u) == {}
    assert not any(openstack.usages(g["node"].uuid).values())

    # again: what is gone is success, nothing more changes
    r = ctl(g["conf"], "finish", str(g["log"]), "--instance", u, "--yes")
    assert r.returncode == 4, r.stdout + r.stderr
    assert openstack.port(g["kept"]["id"]) is not None


@pytest.fixture
def steps_host(tmp_path):
    h = StepsHost(tmp_path)
    yield h
    h.close()


def _gone(host: StepsHost) -> None:
    """The host's nova-compute last reported three hours ago (a row is made if the
    host has none)."""
    import sqlalchemy as sa
    sv = s.services
    then = novadb.utcnow() - datetime.timedelta(hours=3)
    with host.engine.begin() as c:
        n = c.execute(sa.update(sv).where(sv.c.host == host.name).values(
            last_seen_up=then, updated_at=then)).rowcount
        if not n:
            c.execute(sv.insert().values(host=host.name, binary="nova-compute",
                                         topic="compute", report_count=1, deleted=0,
                                         last_seen_up=then, updated_at=then))


def test_finish_after_reaper_manage_on_a_host_without_service_sections(steps_host, openstack,
                                                                       tmp_path):
    """``reaper-manage reap`` (its config has no [neutron]/[cinder]/[placement]) reclaims
    an instance with a Nova-created port, a pre-existing port, a new-style attachment
    (delete_on_termination), an old-style one and allocations; the host is then gone
    (its nova-compute not seen for three hours). The reclaim exits 4 having called no
    service (ports bound, volumes in-use, allocations kept) and records every service
    not_configured with the instance's facts; reaper-ctl finish without --yes exits 3
    and changes nothing; with --yes it exits 4 and Neutron, Cinder and Placement are as
    Nova's delete leaves them."""
    host = steps_host
    inst = host.reclaimable(openstack)
    r, rep = host.manage("")
    assert rep is not None, r.stderr[-2000:]
    assert r.returncode == 4, (r.returncode, r.stderr[-2000:])
    (a,) = [a for a in rep["actions"] if a["instance_uuid"] == inst.uuid]
    assert a["result"] == "done" and dict(a["steps"])["finalize_db"].startswith("finalized")
    assert not {"release_ports", "detach_volumes", "delete_allocations"} & set(
        dict(a["steps"]))
    assert host.journal() == []
    assert openstack.port(inst.nova_port) is not None
    assert openstack.volume(inst.new_volume)["status"] == "in-use"
    assert openstack.allocations(inst.uuid)
    (rec,) = host.actions(inst.uuid)
    left = rec["evidence"]["controller_leftovers"]
    assert {v["status"] for v in left["services"].values()} == {"not_configured"}
    assert left["facts"]["uuid"] == inst.uuid
    assert "auth_password" not in json.dumps(rec)

    _gone(host)
    conf = tmp_path / "reaper-ctl.conf"
    conf.write_text(f"[database]\nconnection = {host.db_url}\n\n"
                    f"[reaper]\naudit_log = {tmp_path / 'finish-audit.log'}\n\n")
    openstack.stack.write_reaper_config(conf, group_users={"cinder": "reaper-admin"})
    r = ctl(conf, "finish", str(host.audit_path), "--instance", inst.uuid)
    assert r.returncode == 3 and "DRY RUN" in r.stdout, r.stdout + r.stderr
    assert "steps: dry_run 3" in r.stdout, r.stdout
    assert openstack.port(inst.nova_port) is not None
    r = ctl(conf, "finish", str(host.audit_path), "--instance", inst.uuid, "--yes")
    assert r.returncode == 4, r.stdout + r.stderr
    openstack.wait_volume(inst.old_volume, "available", timeout=300)
    assert_as_nova_leaves_a_reclaim(openstack, inst)
