"""A host with no [neutron]/[cinder]/[placement] section still records the instance's
facts in its leftovers (from the Nova rows its pass already read), so ``reaper-ctl
finish`` can do from a controller what the host did not; it makes no service call and
journals no service step. On the demo host (libvirt's test driver, SQLite Nova DB)."""
from __future__ import annotations

import datetime
import json
import tempfile

import pytest
from oslo_config import cfg

from reaper import demo, finisher
from reaper.conf import services as conf_services
from reaper.kinds.services import plugin as service_wiring
from reaper.services import (DELETE_ALLOCATIONS, DETACH_VOLUMES, RELEASE_PORTS,
                             REMOVE_NODE_ALLOCATIONS, SERVICE_STEPS, InstanceFacts, PortFact,
                             VolumeFact)
from reaper.services import facts as facts_mod
from tests.fixtures import novadb

NOVA_PORT, PRE_PORT = novadb.new_uuid(), novadb.new_uuid()
CHAP = "chap-s3cret"            # in novadb.iscsi_connection_info's data


def _no_sections() -> cfg.ConfigOpts:
    """The service groups as a host without any section has them (a real, empty file)."""
    conf = cfg.ConfigOpts()
    conf_services.register_opts(conf)
    with tempfile.NamedTemporaryFile("w", suffix=".conf") as f:
        f.write("[DEFAULT]\n")
        f.flush()
        conf(["--config-file", f.name], default_config_files=[], default_config_dirs=[])
    return conf


@pytest.fixture
def host(tmp_path):
    reaper, handles, cast = demo.build(str(tmp_path / "host"))
    service_wiring.enable(reaper, conf=_no_sections())
    yield reaper, handles, {m.label: m.uuid for m in cast}
    reaper.close()


def _soft_deleted(eng) -> tuple[str, str, str, str]:
    """A reclaimable instance with a Nova-created port, a pre-existing one, a
    new-style attachment (delete_on_termination) and an old-style BDM whose
    connection_info holds CHAP data and the connector Nova stored."""
    u = novadb.add_instance(eng, host=demo.HOST, node=demo.HOST, vm_state="soft-delete",
                            power_state=4,
                            deleted_at=novadb.utcnow() - datetime.timedelta(days=2))["uuid"]
    novadb.add_info_cache(eng, u, [novadb.vif(NOVA_PORT),
                                   {**novadb.vif(PRE_PORT), "preserve_on_delete": True}])
    new = novadb.add_bdm(eng, u, delete_on_termination=True, device_name="/dev/vdb")
    ci = json.loads(novadb.iscsi_connection_info("v-old"))
    ci["connector"] = {"initiator": "iqn.1994-05.com.redhat:demo", "host": demo.HOST,
                       "ip": "192.0.2.7", "multipath": False, "wwpns": ["50014380242b9750"],
                       "auth_password": CHAP, "chap": {"password": CHAP},
                       "nested": {"x": CHAP}}
    novadb.add_bdm(eng, u, volume_id="v-old", attachment_id=None, device_name="/dev/vdc",
                   connection_info=json.dumps(ci))
    return u, new["volume_id"], new["attachment_id"], "v-old"


def _actions(path) -> list[dict]:
    return [json.loads(x) for x in open(path) if x.strip()
            and json.loads(x).get("event") == "action"]


def test_a_host_without_service_sections_records_the_facts_of_a_reclaim(host):
    reaper, handles, _u = host
    eng = handles["engine"]
    u, new_vol, att, old_vol = _soft_deleted(eng)
    rep = reaper.run_pass("reclaim")
    assert novadb.get_instance(eng, u)["vm_state"] == "deleted", rep.to_table()
    (rec,) = [r for r in _actions(handles["audit_log"]) if r["instance_uuid"] == u]
    assert rec["result"] == "done"
    # no service step was planned, journaled or run
    assert not {s for s, _ in rec["evidence"]["steps"]} & SERVICE_STEPS
    left = rec["evidence"]["controller_leftovers"]
    # the leftover lists as before ...
    assert left["ports"] == [NOVA_PORT, PRE_PORT]
    assert left["attachment_ids"] == [att] and left["volumes_delete_on_termination"] == [new_vol]
    assert left["allocations"] == {"consumer": u}
    # ... every service not configured, and the facts to finish them with
    assert {k: v["status"] for k, v in left["services"].items()} == {
        "network": "not_configured", "block-storage": "not_configured",
        "placement": "not_configured"}
    f = InstanceFacts.from_dict(left["facts"])
    assert (f.uuid, f.host, f.node, f.network_info) == (u, demo.HOST, demo.HOST, "ok")
    assert f.ports == (PortFact(NOVA_PORT), PortFact(PRE_PORT, True))
    assert f.volumes == (
        VolumeFact(new_vol, att, True, None),
        VolumeFact(old_vol, None, False, {"initiator": "iqn.1994-05.com.redhat:demo",
                                          "host": demo.HOST, "ip": "192.0.2.7",
                                          "multipath": False,
                                          "wwpns": ["50014380242b9750"]}))
    # no secret of connection_info in the record, and a record of modest size
    text = json.dumps(rec)
    assert CHAP not in text and "chapuser" not in text and "auth_" not in text
    assert len(json.dumps(left["facts"])) < 2048
    # reaper-ctl finish acts on it, with its usual guards (host gone, row deleted)
    lo = finisher.leftover_of(rec)
    assert [step for _, step, _ in lo.pending()] == [RELEASE_PORTS, DETACH_VOLUMES,
                                                     DELETE_ALLOCATIONS]
    gone = finisher.HostState(demo.HOST, False, "its nova-compute service is deleted")
    ds = finisher.decide(lo, gone, True, "deleted", lambda g: True)
    assert [d.act for d in ds] == [True, True, True], [d.reason for d in ds]
    up = finisher.HostState(demo.HOST, True, "up")
    assert not any(d.act for d in finisher.decide(lo, up, True, "deleted", lambda g: True))


def test_a_host_without_placement_records_the_facts_of_an_evacuated_teardown(host):
    reaper, handles, u = host
    rep = reaper.run_pass("reap")
    (rec,) = [r for r in _actions(handles["audit_log"]) if r["instance_uuid"] == u["evacuated"]]
    assert rec["result"] == "done", rep.to_table()
    assert not {s for s, _ in rec["evidence"]["steps"]} & SERVICE_STEPS
    left = rec["evidence"]["controller_leftovers"]
    assert left["services"]["placement"]["status"] == "not_configured"
    assert left["services"]["placement"]["step"] == REMOVE_NODE_ALLOCATIONS
    assert left["migration"]["status"] == "done"        # nova-compute's to complete
    f = InstanceFacts.from_dict(left["facts"])
    assert f.node == demo.HOST and f.node_uuid and f.migration_id
    # the finisher leaves evacuations alone (the instance lives on elsewhere)
    assert finisher.leftover_of(rec) is None


def test_a_stored_connector_keeps_only_flat_values_under_harmless_keys():
    ci = {"data": {"auth_password": CHAP},
          "connector": {"host": "h", "initiator": "iqn.x", "nqn": "nqn.y",
                        "auth_password": CHAP, "CHAP_secret": CHAP, "token": CHAP,
                        "sub": {"a": CHAP}, "mixed": ["ok", {"a": CHAP}]}}
    assert facts_mod.connector_of(json.dumps(ci)) == {"host": "h", "initiator": "iqn.x",
                                                      "nqn": "nqn.y"}
    huge = {"connector": {"host": "h", "wwpns": ["5" * 16] * 1000}}
    assert facts_mod.connector_of(json.dumps(huge)) is None
