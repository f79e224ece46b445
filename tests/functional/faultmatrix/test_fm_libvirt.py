"""libvirtd drops the reaper's connection part-way through the domain collection
(issue 13, the fault matrix): the domains' ``XMLDesc`` calls run on a thread of their
own, ahead of the parsing, while the other kinds collect on the pass's thread.

Real parts: the demo host's domains reached through the system libvirtd
(``test+unix://``, the test driver inside the daemon, as production reaches
``qemu:///system``), and the daemon itself closing the client's socket
(``virt-admin client-disconnect``) at a chosen ``XMLDesc`` call, so the calls after it
fail the way a restarted or overloaded libvirtd makes them fail.
"""
from __future__ import annotations

import os
import subprocess
import threading
import time

import libvirt
import pytest

from reaper import demo
from tests.conftest import service_unavailable

pytestmark = pytest.mark.functional


def _clients() -> set[str]:
    out = subprocess.run(["virt-admin", "srv-clients-list", "libvirtd"], capture_output=True,
                         text=True, timeout=30)
    if out.returncode != 0:
        service_unavailable("virt-admin (libvirtd's admin socket)", out.stderr.strip())
    return {line.split()[0] for line in out.stdout.splitlines()[2:] if line.strip()}


def _open_through_daemon(node: str) -> tuple[libvirt.virConnect, str]:
    """A connection to the test driver inside libvirtd, and its admin client id."""
    before = _clients()
    try:
        conn = libvirt.open(f"test+unix://{node}")
    except libvirt.libvirtError as exc:
        service_unavailable("libvirtd (test+unix://)", exc)
    new = _clients() - before
    assert len(new) == 1, (before, new)
    return conn, new.pop()


def _xml_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "reaper-domain-xml"]


@pytest.mark.parametrize("at", [pytest.param(1, id="first-xml"),
                                pytest.param(3, id="mid-way")])
def test_libvirtd_drops_the_connection_while_the_xml_thread_is_ahead(tmp_path, monkeypatch,
                                                                     at):
    """libvirtd closes the reaper's connection (virt-admin client-disconnect) at an XMLDesc call of a reap pass on the demo host, whose first reap otherwise destroys domains and deletes directories.

    Expect: the pass trips the collector_failed guard for the domains (libvirt connection failed), acts on nothing (no action, nothing journaled, every instance directory and Nova row kept), and leaves no collector thread behind; the next reap, on a new connection, does what the demo's first reap does.
    """
    reaper, handles, _cast = demo.build(str(tmp_path / "host"))
    conn, client = _open_through_daemon(handles["node"])
    reaper.connect = lambda: conn
    inst = handles["instances_path"]
    dirs_before = sorted(os.listdir(inst))
    rows_before = _rows(handles["engine"])

    real_xmldesc = libvirt.virDomain.XMLDesc
    calls = []

    def xmldesc(dom, flags=0):
        calls.append(threading.current_thread().name)
        if len(calls) == at:
            subprocess.run(["virt-admin", "client-disconnect", "libvirtd", client],
                           check=True, capture_output=True, timeout=30)
        return real_xmldesc(dom, flags)
    monkeypatch.setattr(libvirt.virDomain, "XMLDesc", xmldesc)
    try:
        rep = reaper.run_pass("reap")
        made = len(calls)
        time.sleep(0.2)
        assert len(calls) == made           # no call after the pass returned
        assert set(calls) == {"reaper-domain-xml"}
        assert not _xml_threads()
        assert rep.actions == [], rep.to_table()
        assert "collector_failed" in str(rep.guards), rep.guards
        assert "domain collector failed: libvirt connection failed" in str(rep.guards)
        assert sorted(os.listdir(inst)) == dirs_before
        assert _rows(handles["engine"]) == rows_before
        assert reaper.state.unfinished() == [] and reaper.state.backlog() == 0
    finally:
        monkeypatch.undo()
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    # libvirtd is back for a new connection: the demo's first reap acts as it should
    again, _ = _open_through_daemon(handles["node"])
    reaper.connect = lambda: again
    try:
        rep = reaper.run_pass("reap")
        assert rep.actions, rep.to_table()
        assert not rep.errors, rep.errors
        assert sorted(os.listdir(inst)) != dirs_before
    finally:
        again.close()
        reaper.close()


def _rows(engine) -> list:
    import sqlalchemy as sa

    from reaper.nova import schema
    with engine.connect() as c:
        return sorted(tuple(r) for r in c.execute(sa.select(
            schema.instances.c.uuid, schema.instances.c.host, schema.instances.c.deleted,
            schema.instances.c.vm_state, schema.instances.c.task_state)))
