"""The OVS collector's select read: the reply decoded into the replica's records,
and the plain JSON-RPC session it is read on (a real unix socket server here)."""
from __future__ import annotations

import json
import os
import socket
import threading

import pytest

from reaper import exception
from reaper.kinds.network import ovs as ovs_inv

P1, P2, P3, I1, I2, I3, I4 = (f"{i:08x}-0000-4000-8000-000000000000" for i in range(1, 8))


def reply(bridge_ports) -> list:
    ext = ["map", [["iface-id", "1c2d3e4f-5a6b"], ["attached-mac", "fa:16:3e:00:00:01"],
                   ["vm-id", "vm-1"]]]
    return [
        {"rows": [{"name": "br-int", "ports": bridge_ports, "datapath_type": ""}]},
        {"rows": [
            {"_uuid": ["uuid", P1], "name": "qvo1c2d3e4f-5a", "interfaces": ["uuid", I1],
             "external_ids": ["map", []]},
            {"_uuid": ["uuid", P2], "name": "bond0", "interfaces": ["set", [["uuid", I2],
                                                                            ["uuid", I3]]],
             "external_ids": ["map", [["reaper-skip", "True"]]]},
            {"_uuid": ["uuid", P3], "name": "empty", "interfaces": ["set", []],
             "external_ids": ["map", []]}]},
        {"rows": [
            {"_uuid": ["uuid", I1], "name": "qvo1c2d3e4f-5a", "type": "", "external_ids": ext,
             "error": ["set", []], "ofport": 7},
            {"_uuid": ["uuid", I2], "name": "eth1", "type": "system",
             "external_ids": ["map", []], "error": "could not open", "ofport": ["set", []]},
            {"_uuid": ["uuid", I3], "name": "eth2", "type": "system",
             "external_ids": ["map", []], "error": ["set", []], "ofport": 3},
            {"_uuid": ["uuid", I4], "name": "elsewhere", "type": "",
             "external_ids": ["map", []], "error": ["set", []], "ofport": 9}]}]


def test_ports_from_select_reads_sets_maps_and_single_atoms():
    exists, ports = ovs_inv.ports_from_select(
        "br-int", reply(["set", [["uuid", P1], ["uuid", P2], ["uuid", P3]]]))
    assert exists
    a, b, c = ports
    assert (a.name, a.uuid, a.iface_type, a.iface_id, a.attached_mac, a.vm_uuid, a.error,
            a.ofport, a.n_interfaces, a.skip) == (
        "qvo1c2d3e4f-5a", P1, "", "1c2d3e4f-5a6b", "fa:16:3e:00:00:01", "vm-1", None, 7, 1,
        False)
    assert (b.iface_type, b.error, b.ofport, b.n_interfaces, b.skip) == (
        "system", "could not open", None, 2, True)
    assert (c.iface_type, c.n_interfaces, c.external_ids) == ("", 0, {})
    # a bridge with one port: its set is the bare uuid atom
    assert [p.name for p in ovs_inv.ports_from_select("br-int", reply(["uuid", P1]))[1]] \
        == ["qvo1c2d3e4f-5a"]
    assert ovs_inv.ports_from_select("br-int", [{"rows": []}, {"rows": []}, {"rows": []}]) \
        == (False, ())


@pytest.fixture
def server(tmp_path):
    """A one-connection JSON-RPC server on a unix socket: it runs ``script(conn, req)``."""
    path = str(tmp_path / "db.sock")
    lsock = socket.socket(socket.AF_UNIX)
    lsock.bind(path)
    lsock.listen(1)
    seen = {}

    def start(script):
        def run():
            conn, _ = lsock.accept()
            with conn:
                data = b""
                while True:
                    data += conn.recv(65536)
                    try:
                        req = json.loads(data)
                        break
                    except ValueError:
                        continue
                seen["req"] = req
                script(conn, req)
        t = threading.Thread(target=run, daemon=True)
        t.start()
        return t
    yield f"unix:{path}", start, seen
    lsock.close()


def test_plain_transact_answers_an_echo_and_reads_a_reply_in_pieces(server):
    remote, start, seen = server
    rows = reply(["uuid", P1])

    def script(conn, req):
        conn.sendall(json.dumps({"id": "echo", "method": "echo", "params": []}).encode())
        body = json.dumps({"id": req["id"], "result": rows, "error": None}).encode()
        for i in range(0, len(body), 97):      # pieces that end inside strings and rows
            conn.sendall(body[i:i + 97])
        seen["echo"] = json.loads(conn.recv(65536))
    t = start(script)
    got = ovs_inv.plain_transact(remote, "transact", ovs_inv.select_request("br-int"), 5)
    t.join(5)
    assert got == rows
    assert seen["req"]["method"] == "transact" and seen["req"]["params"][0] == "Open_vSwitch"
    assert seen["echo"] == {"id": "echo", "result": [], "error": None}


def test_plain_transact_errors_are_ovs_unavailable(server, tmp_path):
    remote, start, _ = server
    t = start(lambda conn, req: conn.sendall(json.dumps(
        {"id": req["id"], "result": None, "error": "unknown database"}).encode()))
    with pytest.raises(exception.OvsUnavailable, match="unknown database"):
        ovs_inv.plain_transact(remote, "transact", [], 5)
    t.join(5)
    t = start(lambda conn, req: None)       # closes without answering
    with pytest.raises(exception.OvsUnavailable, match="closed"):
        ovs_inv.plain_transact(remote, "transact", [], 5)
    t.join(5)
    with pytest.raises(exception.OvsUnavailable, match="cannot connect"):
        ovs_inv.plain_transact(f"unix:{tmp_path}/none.sock", "transact", [], 1)
    assert not os.path.exists(f"{tmp_path}/none.sock")


def test_select_ports_reports_an_operation_error(server):
    remote, start, _ = server
    t = start(lambda conn, req: conn.sendall(json.dumps(
        {"id": req["id"], "error": None,
         "result": [{"error": "syntax error", "details": "no column"}]}).encode()))
    with pytest.raises(exception.OvsUnavailable, match="syntax error: no column"):
        ovs_inv.select_ports(remote, "br-int", 5)
    t.join(5)
