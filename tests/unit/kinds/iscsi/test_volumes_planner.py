"""R12 (leaked_iscsi), the volume part of teardowns and R13 evidence, table-driven.

Pure: records in, plan out; no iSCSI, libvirt or DB. The iSCSI host facts are the
records the collector (reaper.kinds.iscsi.collector) produces.
"""
from __future__ import annotations

import datetime
import json

import pytest

from reaper import planner
from reaper.kinds.iscsi import rules as volumes
from reaper.policy import Policy, default_actions
from reaper.kinds.iscsi.objects import (
    BlockPartition,
    DmMap,
    IscsiBootTarget,
    IscsiNode,
    IscsiOperatorNote,
    IscsiSession,
    ScsiDevice,
)
from reaper.objects.fields import Action, Classification, DirKind, ResourceKind
from reaper.objects.host import CollectorResult, Domain, DomainDisk, InstanceDir
from reaper.objects.nova import BdmRow, InstanceRow, MigrationRow
from tests.fixtures import records

HOST, OTHER = "cmp-1", "cmp-2"
NOW = datetime.datetime(2026, 11, 23, 12, 0, 0)
OLD = NOW - datetime.timedelta(days=1)
ROOT = "/var/lib/nova/instances"
A = "aaaaaaaa-0000-0000-0000-000000000001"     # live instance on our host
B = "bbbbbbbb-0000-0000-0000-000000000002"     # another one
C = "cccccccc-0000-0000-0000-000000000003"     # torn down / gone
P1, P2 = "10.0.0.1:3260", "10.0.0.2:3260"
IQN = "iqn.2010-10.org.openstack:volume-1"
IQN2 = "iqn.2010-10.org.openstack:volume-2"
SECRET = "s3cr3t-chap-password"
VOL1, VOL2 = "11111111-1111-1111-1111-111111111111", "22222222-2222-2222-2222-222222222222"


def policy(action="reap", **kw) -> Policy:
    kw.setdefault("actions", default_actions() | {Classification.LEAKED_ISCSI: Action(action)})
    return records.policy(**kw)


def dev(name, lun, portal=P1, iqn=IQN, sid="1", holders=(), open_pids=(), mounted=False,
        wwid=None, partitions=(), devt="8:0"):
    host = int(sid) + 1
    return ScsiDevice(name=name, hctl=f"{host}:0:0:{lun}", lun=lun, state="running",
                      wwid=wwid or f"naa.{name}", dev=devt,
                      paths=(f"/dev/{name}",
                             f"/dev/disk/by-path/ip-{portal}-iscsi-{iqn}-lun-{lun}"),
                      holders=tuple(holders), open_pids=tuple(open_pids), mounted=mounted,
                      partitions=tuple(partitions))


def part(name, disk="sdb", n=1, portal=P1, iqn=IQN, lun=0, devt="8:17", **kw):
    return BlockPartition(name=name, disk=disk, dev=devt, paths=(
        f"/dev/{name}", f"/dev/disk/by-path/ip-{portal}-iscsi-{iqn}-lun-{lun}-part{n}"), **kw)


def sess(sid="1", portal=P1, iqn=IQN, devices=(), node_type="non-flash"):
    return IscsiSession(transport="tcp", sid=sid, portal=portal, tpgt="1", iqn=iqn,
                        host_no=int(sid) + 1, devices=tuple(devices), node_type=node_type)


def ci(portal=P1, iqn=IQN, lun=0, **extra) -> str:
    data = {"target_portal": portal, "target_iqn": iqn, "target_lun": lun,
            "auth_method": "CHAP", "auth_username": "chapuser", "auth_password": SECRET,
            "volume_id": VOL1, "target_discovered": False, "device_path": "/dev/sdb"}
    data.update(extra)
    return json.dumps({"driver_volume_type": "iscsi", "data": data, "serial": VOL1})


def bdm(uuid=A, conn=None, volume=VOL1, bid=1) -> BdmRow:
    return BdmRow(bid, uuid, volume, "volume", "volume", "/dev/vdb", False,
                  conn if conn is not None else ci(), None)


def row(uuid=A, **kw) -> InstanceRow:
    return records.row(uuid=uuid, id=abs(hash(uuid)) % 1000, **kw)


def domain(uuid=A, sources=(), name=None, nova=True, state="running", serials=None) -> Domain:
    disks = [records.disk(target=f"vd{chr(98 + i)}", source_type="block", source=src,
                          serial=(serials or {}).get(src)) for i, src in enumerate(sources)]
    return records.domain(uuid=uuid, name=name or f"instance-{uuid[:8]}", state=state,
                          nova=nova, disks=disks)


def mig(uuid=A, mtype="evacuation", status="done", source=HOST, dest=OTHER) -> MigrationRow:
    return records.migration(instance_uuid=uuid, mtype=mtype, status=status, source=source,
                             dest=dest)


def run(items=(), domains=(), rows=(), bdms=(), migs=(), dirs=(), domains_ok=True,
        iscsi_ok=True, **pol):
    inv = records.inventory(domains=domains, dirs=dirs, domains_ok=domains_ok, extra={
        "iscsi_session": CollectorResult("iscsi_session", iscsi_ok, tuple(items))})
    view = records.nova_view(rows=rows, migrations=migs, bdms=tuple(bdms))
    return planner.build_plan(inv, view, policy(**pol), NOW, extensions=[volumes.extend])


def leaks(plan):
    return [f for f in plan.findings if f.classification is Classification.LEAKED_ISCSI]


def leak_plans(plan):
    return [t for t in plan.teardowns if t.classification is Classification.LEAKED_ISCSI]


# --------------------------------------------------------------------------
# R12, table-driven: (id, facts, expected leaked resources, expected action)
# --------------------------------------------------------------------------

S_ONE = sess(devices=[dev("sdb", 0)])
S_TWO = sess(devices=[dev("sdb", 0), dev("sdc", 1)])

R12 = [
    ("BDM of a live local instance keeps its session",
     dict(items=[S_ONE], rows=[row()], bdms=[bdm()]), [], None),
    ("detach left the session, BDM gone: leaked",
     dict(items=[S_ONE], rows=[row()]), [f"{P1} {IQN} lun 0 (sdb)"], Action.REAP),
    ("two LUNs, one still attached: only the other is leaked",
     dict(items=[S_TWO], rows=[row()], bdms=[bdm(conn=ci(lun=1))]),
     [f"{P1} {IQN} lun 0 (sdb)"], Action.REAP),
    ("multipath BDM keeps all its portals",
     dict(items=[sess("1", P1, devices=[dev("sdb", 0)]),
                 sess("2", P2, devices=[dev("sdc", 0, portal=P2, sid="2")])],
          rows=[row()],
          bdms=[bdm(conn=ci(target_portals=[P1, P2], target_iqns=[IQN, IQN],
                            target_luns=[0, 0]))]), [], None),
    ("multipath BDM without target_iqns keeps any iqn at its portals",
     dict(items=[sess("2", P2, IQN2, devices=[dev("sdc", 0, portal=P2, iqn=IQN2, sid="2")])],
          rows=[row()], bdms=[bdm(conn=ci(target_portals=[P1, P2], target_luns=[0, 0]))]),
     [], None),
    ("portal without port and iqn in upper case still match",
     dict(items=[S_ONE], rows=[row()], bdms=[bdm(conn=ci(portal="10.0.0.1", iqn=IQN.upper()))]),
     [], None),
    ("BDM of a deleted instance protects nothing",
     dict(items=[S_ONE], rows=[row(deleted=1, vm_state="deleted", deleted_at=OLD)],
          bdms=[bdm()]), [f"{P1} {IQN} lun 0 (sdb)"], Action.REAP),
    ("BDM of an instance living on another host protects nothing",
     dict(items=[S_ONE], rows=[row(host=OTHER)], bdms=[bdm()]),
     [f"{P1} {IQN} lun 0 (sdb)"], Action.REAP),
    ("BDM of an instance migrating to us protects",
     dict(items=[S_ONE], rows=[row(host=OTHER)], bdms=[bdm()],
          migs=[mig(mtype="live-migration", status="running", source=OTHER, dest=HOST)]),
     [], None),
    ("BDM of an instance whose directory is here protects",
     dict(items=[S_ONE], rows=[row(host=OTHER)], bdms=[bdm()],
          dirs=[InstanceDir(A, A, DirKind.INSTANCE, f"{ROOT}/{A}", 1, 0.0)]), [], None),
    ("a domain's XML names the device",
     dict(items=[S_ONE], domains=[domain(B, ["/dev/sdb"])], rows=[row(B)]), [], None),
    ("a non-Nova domain's by-path disk names it",
     dict(items=[S_ONE], domains=[domain(B, [f"/dev/disk/by-path/ip-{P1}-iscsi-{IQN}-lun-0"],
                                         nova=False)]), [], None),
    ("a shut-off domain still pins it",
     dict(items=[S_ONE], domains=[domain(B, ["/dev/sdb"], state="shutoff")], rows=[row(B)]),
     [], None),
    ("open by a process",
     dict(items=[sess(devices=[dev("sdb", 0, open_pids=[4242])])]), [], None),
    ("mounted on the host",
     dict(items=[sess(devices=[dev("sdb", 0, mounted=True)])]), [], None),
    ("held by dm-crypt",
     dict(items=[sess(devices=[dev("sdb", 0, holders=["dm-0"])]),
                 DmMap("dm-0", "crypt-x", "CRYPT-LUKS2-x", ("sdb",))]), [], None),
    ("held by an open multipath map",
     dict(items=[sess(devices=[dev("sdb", 0, holders=["dm-0"])]),
                 DmMap("dm-0", "mpatha", "mpath-36001", ("sdb",), open_pids=(7,))]), [], None),
    ("multipath map named in a domain's XML",
     dict(items=[sess(devices=[dev("sdb", 0, holders=["dm-0"])]),
                 DmMap("dm-0", "mpatha", "mpath-36001", ("sdb",),
                       paths=("/dev/dm-0", "/dev/mapper/mpatha"))],
          domains=[domain(B, ["/dev/mapper/mpatha"])], rows=[row(B)]), [], None),
    ("unused multipath map over leaked paths: leaked",
     dict(items=[sess("1", P1, devices=[dev("sdb", 0, holders=["dm-0"])]),
                 sess("2", P2, devices=[dev("sdc", 0, portal=P2, sid="2", holders=["dm-0"])]),
                 DmMap("dm-0", "mpatha", "mpath-36001", ("sdb", "sdc"))]),
     [f"{P1} {IQN} lun 0 (sdb)", f"{P2} {IQN} lun 0 (sdc)"], Action.REAP),
    ("session without any LUN: leaked",
     dict(items=[sess()]), [f"{P1} {IQN} (no LUN)"], Action.REAP),
    ("session without LUN but named by a BDM: kept",
     dict(items=[sess()], rows=[row()], bdms=[bdm(conn=ci(lun=4))]), [], None),
    ("node record with no session: leaked",
     dict(items=[IscsiNode(P1, "1", IQN)]), [f"node {P1} {IQN}"], Action.REAP),
    ("node record of a live session: not listed",
     dict(items=[S_ONE, IscsiNode(P1, "1", IQN)], rows=[row()], bdms=[bdm()]), [], None),
    ("node record named by a BDM: kept",
     dict(items=[IscsiNode(P1, "1", IQN)], rows=[row()], bdms=[bdm()]), [], None),
    ("flash (boot) session: never ours",
     dict(items=[sess(devices=[dev("sdb", 0)], node_type="flash")]), [], None),
    ("garbage connection_info of a live instance: only logging",
     dict(items=[S_ONE], rows=[row()], bdms=[bdm(conn="{not json")]),
     [f"{P1} {IQN} lun 0 (sdb)"], Action.LOG),
    ("connection_info not written yet (attach in progress): only logging",
     dict(items=[S_ONE], rows=[row()], bdms=[bdm(conn="")]),
     [f"{P1} {IQN} lun 0 (sdb)"], Action.LOG),
    ("a migration touching us in flight: only logging",
     dict(items=[S_ONE], rows=[row(B, host=OTHER)],
          migs=[mig(B, mtype="live-migration", status="running", source=HOST, dest=OTHER)]),
     [f"{P1} {IQN} lun 0 (sdb)"], Action.LOG),
    ("domain list unavailable: only logging",
     dict(items=[S_ONE], domains_ok=False), [f"{P1} {IQN} lun 0 (sdb)"], Action.LOG),
    ("default policy is log",
     dict(items=[S_ONE], action="log"), [f"{P1} {IQN} lun 0 (sdb)"], Action.LOG),
    ("ignore hides them",
     dict(items=[S_ONE], action="ignore"), [], None),
    ("iSCSI collector failed: nothing",
     dict(items=[S_ONE], iscsi_ok=False), [], None),
    # -- partitions, stacks and the host's own sessions (issue 9, item 12)
    ("a partition open by a process",
     dict(items=[sess(devices=[dev("sdb", 0, partitions=["sdb1"])]),
                 part("sdb1", open_pids=(4242,))]), [], None),
    ("a partition named by a domain through a -partN by-path link",
     dict(items=[sess(devices=[dev("sdb", 0, partitions=["sdb1"])]), part("sdb1")],
          domains=[domain(B, [f"/dev/disk/by-path/ip-{P1}-iscsi-{IQN}-lun-0-part1"],
                          nova=False)]), [], None),
    ("a -partN by-path link whose device is gone still names the LUN",
     dict(items=[S_ONE], domains=[domain(B, [f"/dev/disk/by-path/ip-{P1}-iscsi-{IQN}-lun-0"
                                             f"-part3"], nova=False)]), [], None),
    ("a partition named by a domain as /dev/sdb1",
     dict(items=[sess(devices=[dev("sdb", 0, partitions=["sdb1"])]), part("sdb1")],
          domains=[domain(B, ["/dev/sdb1"], nova=False)]), [], None),
    ("a domain source the domain collector resolved to the partition",
     dict(items=[sess(devices=[dev("sdb", 0, partitions=["sdb1"])]), part("sdb1")],
          domains=[Domain(B, "appliance", "running", False, None, disks=(
              DomainDisk("vdb", "disk", "block", "/srv/links/data", resolved="sdb1"),))]),
     [], None),
    ("a domain source that is the partition's device number",
     dict(items=[sess(devices=[dev("sdb", 0, partitions=["sdb1"])]), part("sdb1")],
          domains=[Domain(B, "appliance", "running", False, None, disks=(
              DomainDisk("vdb", "disk", "block", "/srv/nodes/data", devt="8:17"),))]),
     [], None),
    ("an LVM volume over a partition, named by a domain",
     dict(items=[sess(devices=[dev("sdb", 0, partitions=["sdb1"])]),
                 part("sdb1", holders=("dm-1",)),
                 DmMap("dm-1", "vg-lv", "LVM-x", ("sdb1",), paths=("/dev/dm-1",
                                                                   "/dev/vg/lv"))],
          domains=[domain(B, ["/dev/vg/lv"], nova=False)]), [], None),
    ("a partition held by an LVM map",
     dict(items=[sess(devices=[dev("sdb", 0, partitions=["sdb1"])]),
                 part("sdb1", holders=("dm-1",)), DmMap("dm-1", "vg-lv", "LVM-x", ("sdb1",))]),
     [], None),
    ("a partition in an md array",
     dict(items=[sess(devices=[dev("sdb", 0, partitions=["sdb1"])]),
                 part("sdb1", holders=("md127",)),
                 DmMap("md127", None, None, ("sdb1",), kind="md")]), [], None),
    ("a partition used as swap",
     dict(items=[sess(devices=[dev("sdb", 0, partitions=["sdb1"])]), part("sdb1", swap=True)]),
     [], None),
    ("a multipath map whose partition map is held",
     dict(items=[sess(devices=[dev("sdb", 0, holders=["dm-0"])]),
                 DmMap("dm-0", "mpatha", "mpath-36001", ("sdb",), holders=("dm-1",)),
                 DmMap("dm-1", "mpatha1", "part1-mpath-36001", ("dm-0",))]), [], None),
    ("a mounted partition makes the whole session the host's: its other LUN is left",
     dict(items=[sess(devices=[dev("sdb", 0, partitions=["sdb1"]), dev("sdc", 1)]),
                 part("sdb1", mountpoints=("/srv/data",))]), [], None),
    ("root on LVM on a partition: the boot session is never touched",
     dict(items=[sess(devices=[dev("sdb", 0, partitions=["sdb2"]), dev("sdc", 1)]),
                 part("sdb2", n=2, holders=("dm-0",)),
                 DmMap("dm-0", "vg0-root", "LVM-r", ("sdb2",), mountpoints=("/",))]),
     [], None),
    ("the iBFT names the target: the boot session is never touched",
     dict(items=[S_ONE, IscsiBootTarget(P2, IQN.upper(), "ibft")]), [], None),
    ("the iBFT target's node record is never reported",
     dict(items=[IscsiNode(P1, "1", IQN), IscsiBootTarget(P1, IQN, "ibft")]), [], None),
    ("another path to the target of the host's root: never touched, its record neither",
     dict(items=[sess(devices=[dev("sdb", 0, partitions=["sdb2"])]),
                 part("sdb2", n=2, mountpoints=("/",)), sess("2", P2),
                 IscsiNode(P2, "1", IQN), IscsiNode("10.0.0.3:3260", "1", IQN)]), [], None),
    ("a partition that is neither used nor named: the LUN is leaked",
     dict(items=[sess(devices=[dev("sdb", 0, partitions=["sdb1"])]), part("sdb1")]),
     [f"{P1} {IQN} lun 0 (sdb)"], Action.REAP),
    # -- sessions the disconnect step could not log out (issue 9, item 14)
    ("a session noted as needing an operator is only logged",
     dict(items=[sess(sid="7"), IscsiOperatorNote(P1, IQN, "7", "iscsid down", "t0")]),
     [f"{P1} {IQN} (no LUN)"], Action.LOG),
    ("a note about another session id does not hold a new session",
     dict(items=[sess(sid="8"), IscsiOperatorNote(P1, IQN, "7", "iscsid down", "t0")]),
     [f"{P1} {IQN} (no LUN)"], Action.REAP),
    # -- hostile connection_info never stops a pass and keeps what it might name
    ("deeply nested connection_info of a live instance: only logging",
     dict(items=[S_ONE], rows=[row()],
          bdms=[bdm(conn='{"driver_volume_type": "iscsi", "data": ' + "[" * 100000
                     + "]" * 100000 + "}")]),
     [f"{P1} {IQN} lun 0 (sdb)"], Action.LOG),
    ("an infinite LUN in a live instance's connection_info: only logging",
     dict(items=[S_ONE], rows=[row()],
          bdms=[bdm(conn=ci().replace('"target_lun": 0', '"target_lun": 1e999'))]),
     [f"{P1} {IQN} lun 0 (sdb)"], Action.LOG),
    ("RBD BDM is not iSCSI and protects nothing",
     dict(items=[S_ONE], rows=[row()],
          bdms=[bdm(conn=json.dumps({"driver_volume_type": "rbd", "data": {"name": "v/x"}}))]),
     [f"{P1} {IQN} lun 0 (sdb)"], Action.REAP),
]


@pytest.mark.parametrize("case", R12, ids=[c[0] for c in R12])
def test_r12(case):
    _, facts, want, want_action = case
    plan = run(**facts)
    got = leaks(plan)
    assert sorted(f.resource for f in got) == sorted(want)
    assert all(f.kind is ResourceKind.ISCSI_SESSION and f.instance_uuid is None for f in got)
    if want_action is not None:
        assert {f.action for f in got} == {want_action}
    tps = leak_plans(plan)
    if want_action is Action.REAP:
        assert tps and all(t.action is Action.REAP and t.volumes for t in tps)
        assert sorted(r for t in tps for r in t.volumes[0]["resources"]) == sorted(want)
    else:
        assert tps == []
    assert SECRET not in json.dumps([f.evidence for f in plan.findings], default=str)
    assert SECRET not in json.dumps([t.volumes for t in plan.teardowns], default=str)


def test_two_luns_one_leaked_is_not_logged_out():
    plan = run(items=[S_TWO], rows=[row()], bdms=[bdm(conn=ci(lun=1))])
    (f,) = leaks(plan)
    assert f.evidence["logout"] is False and "sdc" in f.evidence["logout_why"]
    assert f.evidence["luns"] == {"0": "leaked", "1": f"in use: bdm 1 (instance {A}, "
                                                   f"volume {VOL1})"}
    (t,) = leak_plans(plan)
    (tg,) = t.volumes[0]["targets"]
    assert tg["logout"] is False and tg["device"] == "sdb" and tg["lun"] == 0


def test_two_luns_both_leaked_may_log_out():
    plan = run(items=[S_TWO])
    assert {f.evidence["logout"] for f in leaks(plan)} == {True}
    assert len(leak_plans(plan)) == 2


def test_leak_named_on_target_by_bdm_without_device_is_not_logged_out():
    plan = run(items=[S_ONE], rows=[row()], bdms=[bdm(conn=ci(lun=7))])
    (f,) = leaks(plan)
    assert f.evidence["logout"] is False and "bdm 1" in f.evidence["logout_why"]


def test_multipath_leak_is_one_disconnect_with_both_paths():
    plan = run(items=[sess("1", P1, devices=[dev("sdb", 0, holders=["dm-0"])]),
                      sess("2", P2, devices=[dev("sdc", 0, portal=P2, sid="2",
                                                 holders=["dm-0"])]),
                      DmMap("dm-0", "mpatha", "mpath-36001", ("sdb", "sdc"))])
    (t,) = leak_plans(plan)
    item = t.volumes[0]
    assert item["multipath"] and item["dm"] == "dm-0" and item["device_path"] == "/dev/dm-0"
    assert [(tg["portal"], tg["device"]) for tg in item["targets"]] == [(P1, "sdb"),
                                                                          (P2, "sdc")]


def test_multipath_map_with_one_path_in_use_is_left_whole():
    plan = run(items=[sess("1", P1, devices=[dev("sdb", 0, holders=["dm-0"])]),
                      sess("2", P2, devices=[dev("sdc", 0, portal=P2, sid="2",
                                                 holders=["dm-0"], open_pids=[9])]),
                      DmMap("dm-0", "mpatha", "mpath-36001", ("sdb", "sdc"))])
    assert [f.resource for f in leaks(plan)] == [f"{P1} {IQN} lun 0 (sdb)"]
    assert leak_plans(plan) == []


def test_leak_evidence_says_what_was_checked():
    plan = run(items=[S_TWO], domains=[domain(B, ["/dev/sdc"])], rows=[row(B), row()],
               bdms=[bdm(conn=ci(iqn=IQN2))])
    (f,) = leaks(plan)
    ev = f.evidence
    assert ev["portal"] == P1 and ev["iqn"] == IQN and ev["lun"] == 0 and ev["sid"] == "1"
    assert ev["device"]["name"] == "sdb" and ev["device"]["wwid"] == "naa.sdb"
    assert ev["checked"] == {"bdms": 1, "domains": 1}
    assert ev["luns"]["1"] == f"in use: domain instance-{B[:8]}"
    assert f.key == f"iscsi_session:{P1} {IQN} lun 0 (sdb)"


def test_garbage_connection_info_is_reported_and_nothing_disconnected():
    plan = run(items=[S_ONE], rows=[row()], bdms=[bdm(conn='{"driver_volume_type": "iscsi", '
                                                        '"data": {"target_lun": 1}}')])
    bad = [f for f in plan.findings if f.kind is ResourceKind.VOLUME_ATTACHMENT]
    assert len(bad) == 1 and bad[0].action is Action.LOG
    assert bad[0].classification is Classification.ATTACHMENT_DRIFT
    assert "unusable iSCSI connection_info" in bad[0].evidence["connection_info_error"]
    assert leak_plans(plan) == []


# --------------------------------------------------------------------------
# connection_info parsing
# --------------------------------------------------------------------------

PARSE = [
    ("single path", ci(lun=3), [(P1, IQN, 3)], None),
    ("multipath", ci(lun=3, target_portals=[P1, P2], target_iqns=[IQN, IQN2],
                     target_luns=[1, 2]),
     [(P1, IQN, 1), (P2, IQN2, 2), (P1, IQN, 3)], None),
    ("multipath, luns from target_lun", ci(lun=5, target_portals=[P1, P2],
                                           target_iqns=[IQN, IQN]),
     [(P1, IQN, 5), (P2, IQN, 5)], None),
    ("multipath without iqns", ci(target_portals=[P2], target_luns=[0]),
     [(P2, None, 0), (P1, IQN, 0)], None),
    ("string lun", ci(lun="4"), [(P1, IQN, 4)], None),
    ("ipv6", ci(portal="[FE80::1]:3260"), [("[fe80::1]:3260", IQN, 0)], None),
    ("iser", json.dumps({"driver_volume_type": "iser",
                         "data": {"target_portal": P1, "target_iqn": IQN, "target_lun": 0}}),
     [(P1, IQN, 0)], None),
    ("not json", "{nope", [], "not valid JSON"),
    ("a list", "[1]", [], "not a JSON object"),
    ("no driver", json.dumps({"data": {}}), [], "no driver_volume_type"),
    ("no data", json.dumps({"driver_volume_type": "iscsi"}), [], "no 'data' object"),
    ("no target", json.dumps({"driver_volume_type": "iscsi", "data": {"target_lun": 0}}), [],
     "no target_portal"),
    ("bad lun", ci(lun="x"), [], "unusable"),
    ("lists differ", ci(target_portals=[P1, P2], target_iqns=[IQN]), [], "does not match"),
    ("deeply nested", '{"driver_volume_type": "iscsi", "data": {"x": ' + "[" * 200000
     + "]" * 200000 + "}}", [], "RecursionError"),
    ("too large", ci(pad="x" * (2 << 20)), [], "too large"),
    ("infinite lun", ci().replace('"target_lun": 0', '"target_lun": 1e999'), [], "unusable"),
    ("fractional lun", ci(lun=1.5), [], "unusable"),
    ("negative lun", ci(lun=-1), [], "out of range"),
    ("huge lun", ci(lun=2 ** 70), [], "out of range"),
    ("list lun", ci(lun=[0]), [], "unusable"),
    ("portal not a string", ci(portal={"ip": "10.0.0.1"}), [], "target_portal"),
    ("iqn not a string", ci(iqn=7), [], "target_iqn"),
    ("portals of dicts", ci(target_portals=[{"a": 1}]), [], "target portal"),
    ("too many portals", ci(target_portals=[P1] * 1000, target_luns=[0] * 1000), [],
     "not a list of portals"),
    ("driver not a string", json.dumps({"driver_volume_type": ["iscsi"], "data": {}}), [],
     "no driver_volume_type"),
    ("not text", b"\x00\xff", [], "not valid JSON"),
]


@pytest.mark.parametrize("case", PARSE, ids=[c[0] for c in PARSE])
def test_parse_connection_info(case):
    _, text, want, err = case
    c = volumes.parse_connection_info(text)
    assert [(r.portal, r.iqn, r.lun) for r in c.refs] == want
    if err:
        assert err in c.error
    else:
        assert c.error is None and c.iscsi
    assert SECRET not in repr(c)


def test_parse_connection_info_other_drivers_and_empty():
    assert volumes.parse_connection_info(None).empty
    rbd = volumes.parse_connection_info(json.dumps({"driver_volume_type": "rbd", "data": {}}))
    assert rbd.driver == "rbd" and not rbd.iscsi and rbd.error is None


def test_by_path_ref():
    r = volumes.by_path_ref(f"/dev/disk/by-path/ip-{P1}-iscsi-{IQN}-lun-12")
    assert (r.portal, r.iqn, r.lun) == (P1, IQN, 12)
    r = volumes.by_path_ref(f"/dev/disk/by-path/pci-0000:00:1f.0-ip-{P2}-iscsi-{IQN}-lun-0")
    assert (r.portal, r.lun) == (P2, 0)
    assert volumes.by_path_ref("/dev/sdb") is None


# --------------------------------------------------------------------------
# Teardowns
# --------------------------------------------------------------------------

def _teardown(plan, uuid):
    (t,) = [t for t in plan.teardowns if t.instance_uuid == uuid]
    return t


def test_evacuated_teardown_uses_the_domain_xml_not_the_bdm():
    # The BDM now holds the destination's connection (same target, LUN 3): LUN 3 here
    # belongs to another, live instance; our own device is LUN 1, found from the XML.
    items = [sess(devices=[dev("sdb", 1), dev("sdc", 3)])]
    plan = run(items=items, domains=[domain(C, [f"/dev/disk/by-path/ip-{P1}-iscsi-{IQN}-lun-1"])],
               rows=[row(C, host=OTHER), row(B)], migs=[mig(C)],
               bdms=[bdm(C, ci(lun=3), bid=1), bdm(B, ci(lun=3), volume=VOL2, bid=2)])
    t = _teardown(plan, C)
    assert t.classification is Classification.EVACUATED
    (item,) = t.volumes
    assert item["origin"] == "domain_xml" and item["keep"] is None
    assert [(tg["device"], tg["lun"], tg["logout"]) for tg in item["targets"]] == \
        [("sdb", 1, False)]
    assert leaks(plan) == []        # sdc is B's, sdb goes with C's teardown


def test_evacuated_teardown_logs_out_when_nothing_else_uses_the_target():
    plan = run(items=[sess(devices=[dev("sdb", 1)])], domains=[domain(C, ["/dev/sdb"])],
               rows=[row(C, host=OTHER)], migs=[mig(C)], bdms=[bdm(C, ci(lun=1))])
    (item,) = _teardown(plan, C).volumes
    assert item["targets"][0]["logout"] is True and item["device_path"] == "/dev/sdb"


def test_reclaim_teardown_adds_the_bdm_luns_present_here():
    soft = row(C, vm_state="soft-delete", deleted_at=OLD)
    items = [sess(devices=[dev("sdb", 0), dev("sdc", 1)])]
    plan = run(items=items, domains=[domain(C, ["/dev/sdb"], state="shutoff",
                                            serials={"/dev/sdb": VOL1})],
               rows=[soft], bdms=[bdm(C, ci(lun=0), bid=1),
                                  bdm(C, ci(lun=1), volume=VOL2, bid=2)])
    t = _teardown(plan, C)
    assert t.action is Action.RECLAIM
    got = sorted((i["origin"], i["volume_id"], i["targets"][0]["device"]) for i in t.volumes)
    assert got == [("bdm", VOL2, "sdc"), ("domain_xml", VOL1, "sdb")]


def test_multi_attached_volume_is_kept_by_the_teardown():
    items = [sess(devices=[dev("sdb", 0)])]
    plan = run(items=items, domains=[domain(C, ["/dev/sdb"]), domain(B, ["/dev/sdb"])],
               rows=[row(C, host=OTHER), row(B)], migs=[mig(C)], bdms=[bdm(B)])
    (item,) = _teardown(plan, C).volumes
    assert item["keep"].startswith("shared: still used by") and f"instance-{B[:8]}" in item["keep"]


@pytest.mark.parametrize("pending_conn", ["", "null", "{not json"])
def test_volume_being_attached_to_a_kept_instance_is_not_disconnected(pending_conn):
    """Multi-attach in progress: B's BDM of VOL1 has no connection_info yet, and no
    domain of B uses the LUN yet; C's teardown must still leave the LUN alone."""
    items = [sess(devices=[dev("sdb", 0)])]
    plan = run(items=items, domains=[domain(C, ["/dev/sdb"], serials={"/dev/sdb": VOL1})],
               rows=[row(C, host=OTHER), row(B)], migs=[mig(C)],
               bdms=[bdm(B, conn=pending_conn, volume=VOL1, bid=7)])
    (item,) = _teardown(plan, C).volumes
    assert item["keep"] and "being attached to instance " + B in item["keep"]
    # without B's BDM the same teardown disconnects it
    plan = run(items=items, domains=[domain(C, ["/dev/sdb"], serials={"/dev/sdb": VOL1})],
               rows=[row(C, host=OTHER), row(B)], migs=[mig(C)])
    (item,) = _teardown(plan, C).volumes
    assert item["keep"] is None


def test_running_deleted_teardown_without_bdms_uses_the_xml():
    plan = run(items=[S_ONE], domains=[domain(C, ["/dev/sdb"])],
               rows=[row(C, deleted=5, vm_state="deleted", deleted_at=OLD)])
    (item,) = _teardown(plan, C).volumes
    assert item["targets"][0]["device"] == "sdb" and item["targets"][0]["logout"] is True


def test_garbage_bdm_of_a_teardown_is_reported_and_ignored():
    soft = row(C, vm_state="soft-delete", deleted_at=OLD)
    plan = run(items=[S_ONE], domains=[domain(C, ["/dev/sdb"], state="shutoff")], rows=[soft],
               bdms=[bdm(C, "garbage", bid=9)])
    (item,) = _teardown(plan, C).volumes
    assert item["origin"] == "domain_xml"
    bad = [f for f in plan.findings if f.kind is ResourceKind.VOLUME_ATTACHMENT]
    assert bad and bad[0].evidence["bdm_id"] == 9


def test_teardown_without_iscsi_disks_has_no_volume_step():
    plan = run(items=[], domains=[domain(C, [f"{ROOT}/{C}/disk"])], rows=[row(C, host=OTHER)],
               migs=[mig(C)])
    assert _teardown(plan, C).volumes == ()


# --------------------------------------------------------------------------
# R13
# --------------------------------------------------------------------------

def test_drift_evidence_shows_the_host_side():
    # a detach that failed half way: the guest still has VOL1, the BDM is gone
    d = domain(A, ["/dev/sdb"], serials={"/dev/sdb": VOL1})
    plan = run(items=[S_ONE], domains=[d], rows=[row()])
    (f,) = [f for f in plan.findings if f.classification is Classification.ATTACHMENT_DRIFT]
    assert f.action is Action.LOG and f.evidence["in_domain_xml"] is True
    assert f.evidence["host"]["iscsi"] == [{"device": "sdb", "lun": 0, "portal": P1,
                                           "iqn": IQN, "sid": "1"}]
    assert leaks(plan) == []        # its session is kept: the guest still uses it


def test_drift_evidence_for_a_bdm_missing_from_the_guest():
    plan = run(items=[S_ONE], domains=[domain(A, [])], rows=[row()], bdms=[bdm()])
    (f,) = [f for f in plan.findings if f.classification is Classification.ATTACHMENT_DRIFT]
    assert f.evidence["live_bdm"] is True
    assert f.evidence["host"]["targets"] == [{"portal": P1, "iqn": IQN, "lun": 0,
                                              "session": "1", "devices": ["sdb"]}]
    assert SECRET not in json.dumps(f.evidence)


def test_teardown_with_block_disks_waits_while_iscsi_state_is_unknown():
    plan = run(items=[], iscsi_ok=False, domains=[domain(C, ["/dev/sdb"])],
               rows=[row(C, host=OTHER)], migs=[mig(C)])
    assert [t for t in plan.teardowns if t.instance_uuid == C] == []
    (f,) = [f for f in plan.findings if f.kind is ResourceKind.DOMAIN]
    assert f.action is Action.LOG and "iSCSI state is unknown" in f.reason


def test_teardown_with_file_disks_goes_on_while_iscsi_state_is_unknown():
    plan = run(items=[], iscsi_ok=False, domains=[domain(C, [f"{ROOT}/{C}/disk"])],
               rows=[row(C, host=OTHER)], migs=[mig(C)])
    assert _teardown(plan, C).volumes == ()


def test_a_domain_whose_xml_could_not_be_read_makes_every_leak_log_only():
    # It may use any session: its disks are unknown (review finding, PR-level).
    unreadable = Domain(uuid="99999999-0000-0000-0000-000000000001", name="appliance",
                        state="unknown", nova_owned=False, nova_uuid=None)
    plan = run(items=[S_ONE], domains=[unreadable], rows=[row()], action="reap")
    assert leaks(plan) and {f.action for f in leaks(plan)} == {Action.LOG}
    assert leak_plans(plan) == []


@pytest.mark.parametrize("portal, want", [
    ("10.0.0.1", "10.0.0.1:3260"),
    ("10.0.0.1:3261,1", "10.0.0.1:3261"),
    ("[FE80::1]:3260", "[fe80::1]:3260"),
    ("[fe80::1]", "[fe80::1]:3260"),
    ("fe80::1:3260", "[fe80::1]:3260"),         # "%s:%s" % (ipv6, port)
    ("fe80::1", "[fe80::1]:3260"),              # bare address, no port
    ("2001:db8::5", "[2001:db8::5]:3260"),
    ("2001:db8::5:3261", "[2001:db8::5]:3261"),
])
def test_norm_portal(portal, want):
    assert volumes.norm_portal(portal) == want


# --------------------------------------------------------------------------
# Partitions, stacks, the host's own sessions (issue 9, item 12)
# --------------------------------------------------------------------------

def test_in_use_evidence_names_the_partition_and_its_holder():
    items = [sess(devices=[dev("sdb", 0, partitions=["sdb1"]), dev("sdc", 1)]),
             part("sdb1", holders=("dm-1",)), DmMap("dm-1", "vg-lv", "LVM-x", ("sdb1",))]
    plan = run(items=items)
    (f,) = leaks(plan)
    assert f.resource == f"{P1} {IQN} lun 1 (sdc)"
    assert f.evidence["luns"]["0"] == "in use: partition sdb1 held by dm-1 (LVM-x)"
    assert f.evidence["logout"] is False


def test_teardown_through_a_partition_link_finds_the_lun():
    # An evacuated instance's domain used a partition of a LUN (its only LUN here).
    items = [sess(devices=[dev("sdb", 1, partitions=["sdb1"])]), part("sdb1", lun=1)]
    plan = run(items=items, domains=[domain(C, [f"/dev/disk/by-path/ip-{P1}-iscsi-{IQN}-lun-1"
                                                f"-part1"])],
               rows=[row(C, host=OTHER)], migs=[mig(C)])
    (item,) = _teardown(plan, C).volumes
    assert [(tg["device"], tg["logout"]) for tg in item["targets"]] == [("sdb", True)]
    assert item["keep"] is None


def test_teardown_keeps_a_lun_of_the_hosts_own_session():
    items = [sess(devices=[dev("sdb", 1), dev("sdc", 2, partitions=["sdc1"])]),
             part("sdc1", disk="sdc", lun=2, mountpoints=("/var/lib/x",))]
    plan = run(items=items, domains=[domain(C, ["/dev/sdb"])], rows=[row(C, host=OTHER)],
               migs=[mig(C)])
    (item,) = _teardown(plan, C).volumes
    assert item["keep"].startswith("the host's own session: LUN 2: sdc1 (over sdc) holds a "
                                   "filesystem the host has mounted on /var/lib/x")
    assert item["targets"][0]["logout"] is False


def test_ibft_names_the_session_even_on_another_portal():
    # The firmware logged in through one portal, the other path came up later.
    plan = run(items=[sess("2", P2, devices=[dev("sdc", 0, portal=P2, sid="2")]),
                      IscsiBootTarget(P1, IQN, "ibft")])
    assert leaks(plan) == []


# --------------------------------------------------------------------------
# Sessions without a node record (issue 9, item 14)
# --------------------------------------------------------------------------

def test_leak_targets_say_whether_a_node_record_exists():
    plan = run(items=[sess(devices=[dev("sdb", 0)]), sess("2", P2, IQN2, devices=[
        dev("sdc", 0, portal=P2, iqn=IQN2, sid="2")]), IscsiNode(P2, "1", IQN2)])
    nodes = {t.volumes[0]["targets"][0]["iqn"]: t.volumes[0]["targets"][0]["node"]
             for t in leak_plans(plan)}
    assert nodes == {IQN: False, IQN2: True}
    ev = {f.evidence["iqn"]: f.evidence["node_record"] for f in leaks(plan)}
    assert ev == {IQN: False, IQN2: True}


def test_operator_note_is_evidence_and_no_teardown():
    plan = run(items=[sess(sid="7", devices=[dev("sdb", 0)]),
                      IscsiOperatorNote(P1, IQN, "7", "iscsid did not answer", "2026-01-01")])
    (f,) = leaks(plan)
    assert f.action is Action.LOG and "needs an operator: iscsid did not answer" in f.reason
    assert f.evidence["needs_operator"] is True
    assert f.evidence["operator_note"] == {"reason": "iscsid did not answer",
                                           "since": "2026-01-01"}
    assert leak_plans(plan) == []


def test_hostile_connection_info_never_raises_from_the_planner():
    rows_ = [row()]
    for text in ('{"driver_volume_type": "iscsi", "data": ' + "{" * 50000,
                 '{"driver_volume_type": "iscsi", "data": ' + '{"a":' * 100000
                 + "1" + "}" * 100000 + "}",
                 "[" * 1000000, "x" * (5 << 20)):
        plan = run(items=[S_ONE], rows=rows_, bdms=[bdm(conn=text)])
        (f,) = leaks(plan)
        assert f.action is Action.LOG


def test_host_own_reasons():
    host = volumes.Host.from_items([
        sess(devices=[dev("sdb", 0, partitions=["sdb2"])]), sess("2", P2),
        part("sdb2", n=2, holders=("dm-0",)),
        DmMap("dm-0", "vg0-root", "LVM-r", ("sdb2",), mountpoints=("/",)),
        sess("3", P1, IQN2), IscsiBootTarget(P1, IQN2, "ibft")])
    s1, s2, s3 = host.sessions
    assert host.host_own(s1) == ("LUN 0: dm-0 (over sdb) holds a filesystem the host has "
                                 "mounted on /")
    assert host.host_own(s2) == f"same target as the host's own session 1: {host.host_own(s1)}"
    assert host.host_own(s3) == f"the host booted from target {IQN2} (firmware table ibft: {P1})"
    assert host.own_iqn(IQN.upper()) and not host.own_iqn("iqn.x:other")


def test_parsed_connection_info_is_remembered_by_text():
    """The same (immutable) answer as a fresh parse; unusable texts stay unusable."""
    from reaper.kinds.iscsi import connection_info as ci
    text = json.dumps({"driver_volume_type": "iscsi", "data": {
        "target_portal": "192.0.2.10:3260", "target_iqn": "iqn.2010-10.org.openstack:v1",
        "target_lun": 1}})
    got = ci.parse_connection_info(text)
    assert got == ci._parse_connection_info(text) and got.iscsi and got.refs
    assert ci.parse_connection_info(text) is got
    assert ci.parse_connection_info("[").error
    assert ci.parse_connection_info(None).empty
