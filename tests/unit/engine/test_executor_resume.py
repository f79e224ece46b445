"""Resuming a journaled reclaim re-checks its claim (libvirt test driver + SQLite)."""
from __future__ import annotations

import datetime

import sqlalchemy as sa

from reaper import demo, state as state_mod
from reaper.executor import teardown
from reaper.kinds.instance import libvirt as libvirt_inv
from reaper.nova import schema
from reaper.objects.fields import Action, Classification
from reaper.objects.plan import TeardownPlan
from tests.fixtures import novadb
from tests.unit.engine.test_planner import HOST, policy


def test_resumed_reclaim_aborts_when_an_operator_reset_the_instance(tmp_path):
    eng = sa.create_engine(f"sqlite:///{tmp_path / 'nova.sqlite'}")
    schema.create_all(eng)
    old = novadb.utcnow() - datetime.timedelta(days=2)
    u = novadb.add_instance(eng, host=HOST, vm_state="soft-delete", deleted_at=old,
                            task_state="deleting")["uuid"]       # claimed by pass 1
    inst = tmp_path / "instances"
    (inst / u).mkdir(parents=True)
    (inst / u / "disk").write_bytes(b"customer data")
    node = tmp_path / "node.xml"
    node.write_text(demo.node_xml([demo.domain_xml(u, "instance-00000001")]))
    conn = libvirt_inv.open_connection(f"test://{node}")
    st = state_mod.StateDB(str(tmp_path / "state"))
    plan = TeardownPlan(u, Classification.RECLAIMABLE, Action.RECLAIM, "instance-00000001",
                        (str(inst / u),), True, True, "reclaim")
    jid = st.begin(plan, "req-1", novadb.utcnow())
    st.step(jid, "claim", "done", novadb.utcnow())
    # nova reset-state --active while the teardown waited for its retry
    with eng.begin() as c:
        c.execute(sa.update(schema.instances).where(schema.instances.c.uuid == u)
                  .values(vm_state="active", task_state=None))
    ctx = teardown.Context(conn=conn, engine=eng, state=st,
                           policy=policy(instances_path=str(inst)), clock=novadb.utcnow)
    (entry,) = st.unfinished()
    out = teardown.execute(ctx, entry.plan, "req-2", journal_id=entry.id,
                           done_steps=entry.steps)
    assert out.result == "aborted" and "claim is gone" in out.reason
    assert conn.lookupByUUIDString(u).isActive()
    assert (inst / u / "disk").read_bytes() == b"customer data"
    assert st.unfinished() == []
