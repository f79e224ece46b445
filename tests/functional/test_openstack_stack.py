"""Smoke tests of the OpenStack test stack (tools/openstack/) and its fixtures.

One short test per service, through the helpers of tests/fixtures/openstack_cloud.py
and keystoneauth adapters loaded from a nova.conf-style file the way reaper
loads its own: they prove the stack answers, the catalog and credentials are
right, and the helpers leave each service in the state the issue's tests start
from.
"""
from __future__ import annotations

import uuid as uuidlib

import pytest

from tests.fixtures.openstack_cloud import CINDER_VERSION, PLACEMENT_VERSION

pytestmark = pytest.mark.functional


def _conf_adapter(conf_path, group: str, service_type: str, **kw):
    """An Adapter built only from the config file's group (and [service_user]),
    with keystoneauth's oslo.config loaders, as Nova builds its clients."""
    from keystoneauth1 import loading as ks_loading
    from keystoneauth1 import service_token
    from oslo_config import cfg

    conf = cfg.ConfigOpts()
    for g in (group, "service_user"):
        ks_loading.register_auth_conf_options(conf, g)
        ks_loading.register_session_conf_options(conf, g)
    ks_loading.register_adapter_conf_options(conf, group)
    conf.register_opt(cfg.BoolOpt("send_service_user_token"), "service_user")
    conf([], default_config_files=[str(conf_path)])

    auth = ks_loading.load_auth_from_conf_options(conf, group)
    if conf.service_user.send_service_user_token:
        auth = service_token.ServiceTokenAuthWrapper(
            auth, ks_loading.load_auth_from_conf_options(conf, "service_user"))
    sess = ks_loading.load_session_from_conf_options(conf, group, auth=auth)
    return ks_loading.load_adapter_from_conf_options(
        conf, group, session=sess, service_type=service_type, **kw)


def test_reaper_config_sections_authenticate_through_the_catalog(openstack_stack, tmp_path):
    conf = tmp_path / "reaper.conf"
    conf.write_text("[DEFAULT]\nhost = cmp-svc-smoke\n")
    openstack_stack.write_reaper_config(conf, group_users={"cinder": "reaper-admin"})
    text = conf.read_text()
    assert "host = cmp-svc-smoke" in text                   # other sections stay
    for group in ("[neutron]", "[cinder]", "[placement]", "[service_user]"):
        assert group in text

    for group, stype in (("neutron", "network"), ("cinder", "block-storage"),
                         ("placement", "placement")):
        adapter = _conf_adapter(conf, group, stype)
        assert adapter.get_endpoint() == openstack_stack.endpoints[stype]
    user = _conf_adapter(conf, "placement", "placement").session.auth
    assert user.get_user_id(_conf_adapter(conf, "placement", "placement").session) \
        == openstack_stack.reaper.user_id


def test_neutron_ports_bound_to_a_host_then_deleted_or_unbound(openstack):
    net, subnet = openstack.create_network()
    instance = str(uuidlib.uuid4())
    owned = openstack.create_port(net["id"], host="cmp-svc-1", device_id=instance)
    kept = openstack.create_port(net["id"], host="cmp-svc-1", device_id=instance,
                                 pre_existing=True)
    for port in (owned, kept):
        port = openstack.port(port["id"])
        assert port["binding:host_id"] == "cmp-svc-1"
        assert port["binding:vif_type"] == "ovs" and port["status"] == "ACTIVE"
        assert port["device_owner"] == "compute:nova"
        assert port["project_id"] == openstack.stack.demo.project_id
        assert port["fixed_ips"][0]["subnet_id"] == subnet["id"]
    assert {p["id"] for p in openstack.ports_of(instance)} == {owned["id"], kept["id"]}

    # What Nova's deallocate_for_instance does, as the reaper user.
    nt = openstack.neutron("reaper")
    nt.delete(f"/v2.0/ports/{owned['id']}")
    nt.put(f"/v2.0/ports/{kept['id']}", json={"port": {
        "device_id": "", "device_owner": "", "binding:host_id": None,
        "binding:profile": {}}})
    assert openstack.port(owned["id"]) is None
    kept = openstack.port(kept["id"])
    assert kept["binding:host_id"] == "" and kept["binding:vif_type"] == "unbound"
    assert kept["device_id"] == "" and openstack.ports_of(instance) == []


def test_cinder_attachments_new_and_old_style_then_detached(openstack):
    instance = str(uuidlib.uuid4())
    new, old = openstack.create_volume(), openstack.create_volume()
    att = openstack.attach_new_style(new["id"], instance, "cmp-svc-1")
    conn = openstack.attach_old_style(old["id"], instance, "cmp-svc-1")
    assert conn["driver_volume_type"]
    for vol in (new, old):
        vol = openstack.volume(vol["id"])
        assert vol["status"] == "in-use"
        assert [a["server_id"] for a in vol["attachments"]] == [instance]
    assert [a["id"] for a in openstack.attachments_of(new["id"])] == [att["id"]]
    assert openstack.attachments_of(new["id"])[0]["status"] == "attached"

    # What Nova's delete does, with the reaper's service token: Cinder deletes
    # an in-use attachment only for a service. Without the owner's token, only
    # an admin sees the owner's volumes (Cinder has no service-role policy).
    stack = openstack.stack
    denied = stack.adapter("block-storage", session=stack.service_session("reaper"),
                           default_microversion=CINDER_VERSION)
    assert denied.delete(f"/attachments/{att['id']}", raise_exc=False).status_code == 404
    without_service_token = stack.adapter("block-storage", "reaper-admin",
                                          default_microversion=CINDER_VERSION)
    r = without_service_token.delete(f"/attachments/{att['id']}", raise_exc=False)
    assert r.status_code == 500            # Cinder asks Nova, which is not there
    cinder = stack.adapter("block-storage",
                           session=stack.service_session("reaper-admin", "reaper"),
                           default_microversion=CINDER_VERSION)
    cinder.delete(f"/attachments/{att['id']}")
    url = f"/volumes/{old['id']}/action"
    cinder.post(url, json={"os-terminate_connection": {
        "connector": {"host": "cmp-svc-1", "initiator": "iqn.1993-08.org.debian:01:x"}}})
    cinder.post(url, json={"os-detach": {}})
    for vol in (new, old):
        assert openstack.volume(vol["id"])["status"] == "available"
    assert openstack.attachments_of(new["id"]) == []
    cinder.delete(f"/volumes/{new['id']}")
    vol = openstack.volume(new["id"])
    assert vol is None or vol["status"] == "deleting"


def test_placement_evacuation_allocations_and_usages(openstack):
    source = openstack.create_compute_node()
    dest = openstack.create_compute_node()
    instance = str(uuidlib.uuid4())
    openstack.allocate_evacuated(instance, source, dest)
    allocs = openstack.allocations(instance)
    assert set(allocs) == {source.uuid, source.child_uuid, dest.uuid, dest.child_uuid}
    assert openstack.usages(source.uuid)["VCPU"] == 1
    assert openstack.usages(source.child_uuid)["CUSTOM_REAPER_TEST"] == 1

    # Drop the source tree from the consumer's allocations, as the reaper user.
    pl = openstack.placement("reaper")
    body = pl.get(f"/allocations/{instance}").json()
    keep = {rp: a for rp, a in body["allocations"].items()
            if rp not in (source.uuid, source.child_uuid)}
    pl.put(f"/allocations/{instance}", json={
        "allocations": keep, "project_id": body["project_id"],
        "user_id": body["user_id"], "consumer_generation": body["consumer_generation"],
        "consumer_type": "INSTANCE"})
    assert set(openstack.allocations(instance)) == {dest.uuid, dest.child_uuid}
    assert openstack.usages(source.uuid)["VCPU"] == 0
    assert openstack.usages(dest.uuid)["VCPU"] == 1

    pl.delete(f"/allocations/{instance}")
    assert openstack.allocations(instance) == {}
    assert pl.delete(f"/allocations/{instance}", raise_exc=False).status_code == 404
    assert PLACEMENT_VERSION >= "1.38"
