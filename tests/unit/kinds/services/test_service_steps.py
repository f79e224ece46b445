"""Service steps without a service: options as Nova's, which ports are deleted or
unbound, which path each BDM takes, the steps' order, and the journal when a service
cannot be reached (a closed loopback port: keystoneauth1's real connection error)."""
from __future__ import annotations

import datetime
import json
import socket

import pytest
import sqlalchemy as sa
from keystoneauth1 import service_token
from oslo_config import cfg

from reaper import exception
from reaper import notifications, planner, state as state_mod
from reaper.conf import services as conf_services
from reaper.kinds.services import plugin as service_wiring
from reaper.executor import teardown
from reaper.nova import evacuation, schema
from reaper.objects.fields import Action, Classification
from reaper.objects.nova import (
    BdmRow,
    ComputeNodeRow,
    InfoCacheRow,
    InstanceRow,
    MigrationRow,
    NovaView,
)
from reaper.objects.plan import Plan, TeardownPlan
from reaper.services import (COMPLETE_MIGRATION, DELETE_ALLOCATIONS, DETACH_VOLUMES,
                             RELEASE_PORTS, REMOVE_NODE_ALLOCATIONS, InstanceFacts, PortFact,
                             VolumeFact, cinder, neutron, placement, session)
from reaper.services import facts as facts_mod
from tests.fixtures import novadb
from tests.unit.engine.test_planner import HOST, OTHER, policy

# -- options -------------------------------------------------------------------------


def _conf(**groups) -> cfg.ConfigOpts:
    """A ConfigOpts with the service groups, read from a real config file (the auth
    plugin's options exist only in the file until keystoneauth1 loads the plugin)."""
    import tempfile
    conf = cfg.ConfigOpts()
    conf_services.register_opts(conf)
    text = "".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
                   for g, values in groups.items())
    with tempfile.NamedTemporaryFile("w", suffix=".conf", delete=False) as f:
        f.write(text)
    conf(["--config-file", f.name], default_config_files=[], default_config_dirs=[])
    return conf


def test_the_groups_are_novas_with_novas_service_types():
    conf = _conf()
    assert (conf.neutron.service_type, conf.cinder.service_type,
            conf.placement.service_type) == ("network", "block-storage", "placement")
    for g in ("neutron", "cinder", "placement"):
        assert getattr(conf, g).valid_interfaces == ["internal", "public"]
        assert getattr(conf, g).timeout == 60.0
        for name in ("auth_type", "auth_section", "region_name", "endpoint_override",
                     "cafile", "insecure"):
            assert name in getattr(conf, g)
        assert not session.configured(conf, g)
    assert conf.service_user.send_service_user_token is False
    assert "auth_type" in conf.service_user


def test_the_sample_generator_lists_the_groups_with_their_auth_options(tmp_path):
    from oslo_config import generator
    out = tmp_path / "reaper.conf.sample"
    # the namespace etc/reaper/reaper-config-generator.conf names for the reaper's groups
    generator.main(["--namespace", "reaper", "--wrap-width", "79",
                    "--output-file", str(out)])
    text = out.read_text()
    for group in ("[neutron]", "[cinder]", "[placement]", "[service_user]"):
        assert group in text
        section = text.split(group, 1)[1].split("\n[", 1)[0]
        for opt in ("#auth_type", "#auth_url", "#username", "#password", "#timeout"):
            assert opt in section, (group, opt)
    assert "#service_type = block-storage" in text
    assert "#send_service_user_token = false" in text


def test_a_group_without_auth_type_is_not_configured_and_gets_no_adapter():
    clients = session.clients_from_conf(_conf())
    for g in ("neutron", "cinder", "placement"):
        c = clients.get(g)
        assert c.adapter is None and c.error is None and not c.configured


def _password(**extra):
    return {"auth_type": "password", "auth_url": "http://127.0.0.1:5000/v3",
            "username": "reaper", "password": "pw", "project_name": "service",
            "user_domain_name": "Default", "project_domain_name": "Default", **extra}


def test_a_configured_group_loads_an_adapter_as_nova_does():
    conf = _conf(neutron=_password(region_name="RegionTwo"))
    clients = session.clients_from_conf(conf)
    a = clients.neutron.adapter
    assert a is not None and a.service_type == "network"
    assert a.region_name == "RegionTwo" and a.interface == ["internal", "public"]
    assert clients.cinder.adapter is None


def test_the_service_token_wraps_the_auth_when_asked():
    conf = _conf(cinder=_password(),
                 service_user=dict(_password(), send_service_user_token=True))
    a = session.clients_from_conf(conf).cinder.adapter
    assert isinstance(a.auth, service_token.ServiceTokenAuthWrapper)
    conf2 = _conf(cinder=_password(), service_user={"send_service_user_token": True})
    c = session.clients_from_conf(conf2).cinder
    assert c.adapter is None and "[service_user]" in c.error


def test_a_group_whose_options_do_not_load_reports_instead_of_raising():
    conf = _conf(placement={"auth_type": "password"})       # no auth_url
    c = session.clients_from_conf(conf).placement
    assert c.configured and c.adapter is None and "[placement]" in c.error


# -- Neutron: delete or unbind -------------------------------------------------------

A, B, C = "aaaa", "bbbb", "cccc"


def test_nova_created_ports_are_deleted_and_preexisting_ones_unbound():
    facts = InstanceFacts("u", ports=(PortFact(A), PortFact(B, True)))
    assert neutron.split_ports([A, B, C], facts) == ([A, C], [B])


def test_a_preexisting_port_no_longer_listed_is_still_unbound_after_a_check():
    facts = InstanceFacts("u", ports=(PortFact(B, True),))
    assert neutron.split_ports([], facts) == ([], [B])


@pytest.mark.parametrize("state", ["missing", "unparsable"])
def test_without_a_readable_cache_no_port_is_deleted(state):
    facts = InstanceFacts("u", ports=(PortFact(A),), network_info=state)
    assert neutron.split_ports([A, C], facts) == ([], [A, C])


def test_unbinding_clears_the_binding_and_keeps_foreign_profile_keys():
    port = {"binding:profile": {"pci_slot": "0000:05:00.1", "allocation": "rp",
                                "trusted": True}, "dns_name": "vm1"}
    body = neutron.unbind_body(port, {"dns_domain": ""})["port"]
    assert body["binding:host_id"] is None
    assert body["device_id"] == "" and body["device_owner"] == ""
    assert body["binding:profile"] == {"trusted": True}
    assert body["dns_name"] == ""
    assert "dns_name" not in neutron.unbind_body(port, {"dns_domain": "ex.org."})["port"]
    # a profile with nothing of this host's is not rewritten (that needs role service)
    assert "binding:profile" not in neutron.unbind_body(
        {"binding:profile": {"trusted": True}}, None)["port"]


def test_ports_and_preserve_on_delete_come_from_network_info():
    ni = json.dumps([novadb.vif(A), {**novadb.vif(B), "preserve_on_delete": True}])
    assert facts_mod.ports_from_network_info(ni) == (
        (PortFact(A, False), PortFact(B, True)), "ok")
    assert facts_mod.ports_from_network_info("[]") == ((), "missing")
    assert facts_mod.ports_from_network_info(None) == ((), "missing")
    assert facts_mod.ports_from_network_info("{nope")[1] == "unparsable"
    assert facts_mod.ports_from_network_info(json.dumps([{"x": 1}]))[1] == "unparsable"


# -- Cinder: which path ----------------------------------------------------------------

def _bdm(i, volume_id, attachment_id=None, dot=False, connection_info=None,
         destination_type="volume", instance_uuid="u"):
    return BdmRow(id=i, instance_uuid=instance_uuid, volume_id=volume_id, source_type="volume",
                  destination_type=destination_type, device_name=f"/dev/vd{i}",
                  delete_on_termination=dot, connection_info=connection_info,
                  attachment_id=attachment_id)


def test_new_style_bdms_delete_their_attachment_old_style_terminate_and_detach():
    ci = json.loads(novadb.iscsi_connection_info("v2"))
    ci["connector"] = {"initiator": "iqn.1994-05.com.redhat:cmp1", "host": HOST,
                       "ip": "192.0.2.1", "auth_password": "x"}
    bdms = [_bdm(1, "v1", attachment_id="att1", dot=True),
            _bdm(2, "v2", connection_info=json.dumps(ci)),
            _bdm(3, None, destination_type="local")]
    vols = facts_mod.volumes_from_bdms(bdms)
    assert vols == (VolumeFact("v1", "att1", True, None),
                    VolumeFact("v2", None, False, {"initiator": "iqn.1994-05.com.redhat:cmp1",
                                                   "host": HOST, "ip": "192.0.2.1"}))
    # no secret of connection_info travels into the facts (journal, audit)
    assert "chap-s3cret" not in json.dumps(InstanceFacts("u", volumes=vols).to_dict())
    assert cinder.plan_volumes(InstanceFacts("u", volumes=vols)) == {
        "attachment_delete": ["att1"], "terminate_detach": ["v2"], "delete": ["v1"]}


def test_facts_round_trip_through_json():
    f = InstanceFacts("u", HOST, HOST, "rp", (PortFact(A, True),), "ok",
                      (VolumeFact("v", None, True, {"host": HOST}),), 7)
    assert InstanceFacts.from_dict(json.loads(json.dumps(f.to_dict()))) == f


# -- Placement -------------------------------------------------------------------------

def test_removing_the_node_tree_keeps_the_destinations_allocations():
    allocs = {"allocations": {"src": {"resources": {"VCPU": 1}, "generation": 3},
                              "src-child": {"resources": {"VGPU": 1}, "generation": 1},
                              "dst": {"resources": {"VCPU": 1}, "generation": 5}},
              "consumer_generation": 4, "project_id": "p", "user_id": "u",
              "consumer_type": "INSTANCE"}
    body = placement.drop_tree(allocs, {"src", "src-child"})
    assert body == {"allocations": {"dst": {"resources": {"VCPU": 1}}},
                    "consumer_generation": 4, "project_id": "p", "user_id": "u",
                    "consumer_type": "INSTANCE"}
    assert placement.drop_tree(allocs, {"other"}) is None
    assert placement.drop_tree({"allocations": {}}, {"src"}) is None


# -- order and planning ------------------------------------------------------------------

def _reclaim_plan(u, services=(RELEASE_PORTS, DETACH_VOLUMES, DELETE_ALLOCATIONS),
                  facts=None, domain="instance-00000001", dirs=("/x",)):
    return TeardownPlan(u, Classification.RECLAIMABLE, Action.RECLAIM, domain, dirs, True,
                        True, "reclaim", services=services,
                        service_facts=(facts or InstanceFacts(u)).to_dict())


def test_service_steps_run_after_the_host_and_before_the_db_in_novas_order():
    assert teardown.steps_for(_reclaim_plan("u")) == [
        "claim", "destroy_domain", "delete_files", "undefine_domain",
        RELEASE_PORTS, DETACH_VOLUMES, DELETE_ALLOCATIONS, "finalize_db"]
    evac = TeardownPlan("u", Classification.EVACUATED, Action.REAP, "instance-1", ("/x",),
                        True, False, "evacuated",
                        services=service_wiring.EVACUATED_STEPS)
    assert teardown.steps_for(evac) == ["destroy_domain", "delete_files", "undefine_domain",
                                        REMOVE_NODE_ALLOCATIONS, COMPLETE_MIGRATION]


def test_a_plan_with_services_survives_the_journal(tmp_path):
    st = state_mod.StateDB(str(tmp_path))
    plan = _reclaim_plan("u", facts=InstanceFacts("u", ports=(PortFact(A, True),)))
    st.begin(plan, "req-1", datetime.datetime(2026, 1, 1))
    (entry,) = st.unfinished(teardown.steps_for)
    assert entry.plan == plan


def _view(u, host=HOST, bdms=(), cache=None, migrations=(), nodes=()):
    row = InstanceRow(id=1, uuid=u, host=host, node=host, vm_state="soft-delete",
                      task_state=None, power_state=4, deleted=0, deleted_at=None)
    return NovaView(ok=True, instances={u: row}, bdms=tuple(bdms),
                    info_caches={u: cache} if cache else {}, migrations=tuple(migrations),
                    compute_nodes=tuple(nodes))


def _ctx(view, teardowns):
    return planner.PlanContext(inv=None, view=view, policy=policy(), now=None,
                               plan=Plan(findings=(), teardowns=tuple(teardowns)))


def test_the_planner_gives_a_reclaim_the_steps_of_the_configured_services_only():
    u = "u1"
    cache = InfoCacheRow(u, json.dumps([novadb.vif(A)]))
    view = _view(u, bdms=[_bdm(1, "v1", "att1", instance_uuid=u), _bdm(2, "v9")],
                 cache=cache)
    base = TeardownPlan(u, Classification.RECLAIMABLE, Action.RECLAIM, None, (), True, True,
                        "reclaim")
    (t,) = service_wiring.extend(_ctx(view, [base]),
                                 groups=frozenset({"neutron", "placement"})).teardowns
    assert t.services == (RELEASE_PORTS, DELETE_ALLOCATIONS)
    f = InstanceFacts.from_dict(t.service_facts)
    assert f.ports == (PortFact(A),)
    assert [v.attachment_id for v in f.volumes] == ["att1"]     # only its own BDMs
    (t,) = service_wiring.extend(_ctx(_view(u), [base]),
                                 groups=frozenset({"cinder"})).teardowns
    assert t.services == ()             # no volumes: no Cinder step


def test_an_evacuated_teardown_gets_this_nodes_provider_and_its_migration():
    u = "u2"
    mig = MigrationRow(id=9, uuid="m", instance_uuid=u, source_compute=HOST,
                       dest_compute=OTHER, source_node=HOST, dest_node=OTHER, status="done",
                       migration_type="evacuation", deleted=0)
    view = _view(u, host=OTHER, migrations=[mig],
                 nodes=[ComputeNodeRow(3, "rp-uuid", HOST, HOST)])
    base = TeardownPlan(u, Classification.EVACUATED, Action.REAP, "instance-2", (), False,
                        False, "evacuated")
    (t,) = service_wiring.extend(_ctx(view, [base]),
                                 groups=frozenset({"placement"})).teardowns
    assert t.services == (REMOVE_NODE_ALLOCATIONS, COMPLETE_MIGRATION)
    f = InstanceFacts.from_dict(t.service_facts)
    assert (f.node_uuid, f.migration_id) == ("rp-uuid", 9)
    (t,) = service_wiring.extend(_ctx(view, [base]), groups=frozenset({"neutron"})).teardowns
    assert t.services == ()             # without [placement] the migration stays 'done'
    other_node = _view(u, host=OTHER, migrations=[mig],
                       nodes=[ComputeNodeRow(3, "rp-uuid", HOST, "another-node")])
    (t,) = service_wiring.extend(_ctx(other_node, [base]),
                                 groups=frozenset({"placement"})).teardowns
    assert t.services == ()             # the source node is not this host's: left alone
    assert service_wiring.without_migration_write(
        TeardownPlan(u, Classification.EVACUATED, Action.REAP, "i", (), False, False, "e",
                     services=service_wiring.EVACUATED_STEPS)).services == (
        REMOVE_NODE_ALLOCATIONS,)


def test_a_soft_deleted_evacuation_is_evidence_but_has_no_migration_to_complete():
    """R2 counts a soft-deleted evacuation record; Nova no longer sees it, so there is
    no migration to mark completed (the step would fail on the row every pass)."""
    import dataclasses
    u = "u3"
    mig = MigrationRow(id=9, uuid="m", instance_uuid=u, source_compute=HOST,
                       dest_compute=OTHER, source_node=HOST, dest_node=OTHER, status="done",
                       migration_type="evacuation", deleted=9)
    view = _view(u, host=OTHER, migrations=[mig],
                 nodes=[ComputeNodeRow(3, "rp-uuid", HOST, HOST)])
    base = TeardownPlan(u, Classification.EVACUATED, Action.REAP, "instance-3", (), False,
                        False, "evacuated")
    (t,) = service_wiring.extend(_ctx(view, [base]),
                                 groups=frozenset({"placement"})).teardowns
    assert t.services == (REMOVE_NODE_ALLOCATIONS,)
    f = InstanceFacts.from_dict(t.service_facts)
    assert (f.node_uuid, f.migration_id) == ("rp-uuid", None)
    live = dataclasses.replace(mig, deleted=0)
    (t,) = service_wiring.extend(_ctx(_view(u, host=OTHER, migrations=[live],
                                            nodes=[ComputeNodeRow(3, "rp-uuid", HOST, HOST)]),
                                      [base]), groups=frozenset({"placement"})).teardowns
    assert t.services == (REMOVE_NODE_ALLOCATIONS, COMPLETE_MIGRATION)


# -- journal: a service that cannot be reached ------------------------------------------

def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _kinds(clients):
    from reaper.kinds.instance.plugin import InstanceKind
    from reaper.kinds.manager import KindManager
    return KindManager([InstanceKind(cfg.CONF), service_wiring.ServicesKind(cfg.CONF, clients)])


def _unreachable(groups=("neutron", "cinder", "placement")):
    port = _closed_port()
    return session.clients_from_conf(_conf(**{
        g: {"auth_type": "none", "endpoint_override": f"http://127.0.0.1:{port}",
            "timeout": 5} for g in groups}))


@pytest.fixture
def nova(tmp_path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'nova.sqlite'}")
    schema.create_all(eng)
    return eng


def _row_reclaim(nova, tmp_path, clients):
    old = novadb.utcnow() - datetime.timedelta(days=2)
    u = novadb.add_instance(nova, host=HOST, vm_state="soft-delete", deleted_at=old)["uuid"]
    novadb.add_info_cache(nova, u, [novadb.vif(A)])
    novadb.add_bdm(nova, u, volume_id="v1", attachment_id="att1", delete_on_termination=True)
    facts = facts_mod.instance_facts(
        u, HOST, HOST, cache=InfoCacheRow(u, json.dumps([novadb.vif(A)])),
        bdms=[_bdm(1, "v1", "att1", dot=True, instance_uuid=u)])
    plan = TeardownPlan(u, Classification.RECLAIMABLE, Action.RECLAIM, None, (), True, True,
                        "reclaim", services=(RELEASE_PORTS, DETACH_VOLUMES,
                                             DELETE_ALLOCATIONS),
                        service_facts=facts.to_dict())
    st = state_mod.StateDB(str(tmp_path / "state"))
    ctx = teardown.Context(conn=None, engine=nova, state=st, policy=policy(),
                           clock=novadb.utcnow, kinds=_kinds(clients))
    return u, plan, st, ctx


def test_unreachable_services_fail_their_steps_but_not_the_reclaim(nova, tmp_path):
    """Every service unreachable: each step fails in the journal, the row is still
    finalized, the entry stays for the next pass, the leftovers say what is left."""
    u, plan, st, ctx = _row_reclaim(nova, tmp_path, _unreachable())
    out = teardown.execute(ctx, plan, "req-1")
    assert out.result == "done", out
    steps = dict(out.steps)
    for s in (RELEASE_PORTS, DETACH_VOLUMES, DELETE_ALLOCATIONS):
        assert steps[s].startswith("failed:"), (s, steps[s])
    assert steps["finalize_db"].startswith("finalized")
    assert novadb.get_instance(nova, u)["vm_state"] == "deleted"
    (entry,) = st.unfinished(teardown.steps_for)
    assert entry.steps[RELEASE_PORTS] == "failed" and entry.steps["finalize_db"] == "done"
    left = out.leftovers
    assert left["ports"] == [A] and left["attachment_ids"] == ["att1"]
    assert left["allocations"] == {"consumer": u}
    assert {k: v["status"] for k, v in left["services"].items()} == {
        "network": "failed", "block-storage": "failed", "placement": "failed"}
    assert InstanceFacts.from_dict(left["facts"]).uuid == u
    # the next pass retries only the service steps; still unreachable: failed again,
    # and not a second "reclaimed"
    out2 = teardown.execute(ctx, entry.plan, "req-2", journal_id=entry.id,
                            done_steps=entry.steps)
    assert out2.result == "failed" and out2.services_retry
    assert dict(out2.steps)["finalize_db"] == "done earlier"
    assert len(st.unfinished(teardown.steps_for)) == 1


def test_a_section_removed_since_the_plan_gives_its_step_up_and_reports_it(nova, tmp_path):
    u, plan, st, ctx = _row_reclaim(nova, tmp_path, _unreachable(("neutron",)))
    out = teardown.execute(ctx, plan, "req-1")
    assert out.result == "done"
    assert dict(out.steps)[RELEASE_PORTS].startswith("failed:")
    assert dict(out.steps)[DETACH_VOLUMES].startswith("not done: [cinder] is not configured")
    assert out.leftovers["services"]["block-storage"]["status"] == "not_configured"
    assert out.leftovers["volumes_delete_on_termination"] == ["v1"]
    (entry,) = st.unfinished(teardown.steps_for)
    assert set(s for s, v in entry.steps.items() if v != "done") == {RELEASE_PORTS}


def test_the_retry_of_services_is_its_own_notification():
    rec = {"event": "action", "result": "done", "classification": "reclaimable",
           "action": "reclaim", "evidence": {"services_retry": True,
                                             "controller_leftovers": {"ports": []}}}
    etype, prio, payload = notifications.event_for(rec)
    assert etype == "reaper.instance.services_finished" and payload["leftovers"] == {
        "ports": []}
    rec["evidence"] = {"controller_leftovers": {"ports": ["p"]}}
    assert notifications.event_for(rec)[0] == "reaper.instance.reclaimed"


# -- the evacuation's migration ----------------------------------------------------------

def test_the_migration_is_completed_once_and_only_from_done(nova):
    u = novadb.add_instance(nova, host=OTHER)["uuid"]
    m = novadb.add_migration(nova, u, HOST, OTHER, "done", "evacuation")
    now = novadb.utcnow()
    assert evacuation.complete_migration(nova, m["id"], u, HOST, now) == "completed"
    assert evacuation.complete_migration(nova, m["id"], u, HOST, now) == "already completed"
    with nova.connect() as c:
        st = c.execute(sa.select(schema.migrations.c.status, schema.migrations.c.updated_at)
                       .where(schema.migrations.c.id == m["id"])).one()
    assert st.status == "completed" and st.updated_at == now.replace(microsecond=0)
    m2 = novadb.add_migration(nova, u, HOST, OTHER, "accepted", "evacuation")
    with pytest.raises(exception.NovaDBError):
        evacuation.complete_migration(nova, m2["id"], u, HOST, now)
    with pytest.raises(exception.NovaDBError):     # not from this host
        evacuation.complete_migration(nova, m["id"], u, OTHER, now)


def test_the_migration_waits_for_the_allocations_step(nova, tmp_path):
    u = novadb.add_instance(nova, host=OTHER)["uuid"]
    m = novadb.add_migration(nova, u, HOST, OTHER, "done", "evacuation")
    facts = InstanceFacts(u, HOST, HOST, "rp", migration_id=m["id"])
    plan = TeardownPlan(u, Classification.EVACUATED, Action.REAP, "instance-2", (), False,
                        False, "evacuated", services=service_wiring.EVACUATED_STEPS,
                        service_facts=facts.to_dict())
    st = state_mod.StateDB(str(tmp_path / "state"))
    # the host teardown was done by an earlier attempt (no libvirt needed here)
    jid = st.begin(plan, "req-0", novadb.utcnow())
    for s in ("destroy_domain", "undefine_domain"):
        st.step(jid, s, "done", novadb.utcnow())
    ctx = teardown.Context(conn=None, engine=nova, state=st, policy=policy(),
                           clock=novadb.utcnow, kinds=_kinds(_unreachable(("placement",))))
    # _verify re-reads the row and migration: the evacuation is still 'done'
    (entry,) = st.unfinished(teardown.steps_for)
    out = teardown.execute(ctx, plan, "req-1", journal_id=jid, done_steps=entry.steps)
    assert dict(out.steps)[COMPLETE_MIGRATION] == f"waits for {REMOVE_NODE_ALLOCATIONS}"
    assert out.leftovers["services"]["placement"]["status"] == "failed"
    with nova.connect() as c:
        assert c.execute(sa.select(schema.migrations.c.status)
                         .where(schema.migrations.c.id == m["id"])).scalar() == "done"
    assert len(st.unfinished(teardown.steps_for)) == 1


def test_an_account_that_cannot_see_others_resources_is_refused_not_trusted():
    """A 404 from a service that scopes the account to its own project would look like
    "already gone": without the roles, the step acts on nothing and is not done."""
    from reaper.services import _http

    class Access:
        role_names = ["service"]

    class Auth:
        def get_access(self, _session):
            return Access()

    class Adapter:              # only what token_roles reads: no request is made
        auth = Auth()
        session = None

    assert _http.lacks_roles(Adapter(), {"admin"}, "Cinder", "x").startswith(
        "the Cinder account has none of the roles ['admin']")
    assert _http.lacks_roles(Adapter(), {"admin", "service"}, "Neutron", "x") is None
    res = cinder.detach_volumes(Adapter(), InstanceFacts("u", volumes=(
        VolumeFact("v1", "att1", True),)))
    assert not res.done and res.left["attachment_delete"] == ["att1"]
    # auth_type none: no token, no roles to check (the requests tell)
    noauth = _unreachable(("neutron",)).neutron.adapter
    assert _http.token_roles(noauth) is None
