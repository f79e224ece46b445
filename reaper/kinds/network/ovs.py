"""Collector of the OVS side of Nova's VIFs: the ports of the integration bridge.

Read-only here; the unplug step uses the same handle for its one write
(``DelVifPortCommand``). A pass reads the ports with one ``select`` transaction
(the bridge, every Port and Interface row, only the columns the reaper reads) on a
fresh JSON-RPC session: one atomic snapshot, parsed by the standard ``json``. The
first write brings up ovsdbapp's native IDL: one long-lived connection monitoring
the same columns (Bridge, Port, Interface); from then on a pass reads its
in-memory replica once, under the connection's lock, instead. The replica is only
trusted while the session is connected: a server that is down (or never
answered) makes the collector return ``ok=False`` and every OVS write fail, so the
guards block the kind and the unplug step is retried on a later pass.

ovsdbapp keeps a backend's connection in a class attribute; each handle uses a
class of its own, so several handles (tests, a reconnect) never share one by
accident. Writes use ovsdbapp's plain transaction (``ovs-vsctl --no-wait``):
removing a port never waits for ovs-vswitchd.
"""
from __future__ import annotations

import errno
import json
import socket
import threading
import time

import ovs.jsonrpc
import ovs.poller
import ovs.stream
import ovs.timeval
from oslo_log import log as logging
from ovsdbapp.backend.ovs_idl import command as ovs_command
from ovsdbapp.backend.ovs_idl import connection as ovs_connection
from ovsdbapp.backend.ovs_idl import idlutils
from ovsdbapp.backend.ovs_idl import transaction as ovs_transaction
from ovsdbapp.schema.open_vswitch import impl_idl

from reaper import exception
from reaper.kinds.network import ovsjson
from reaper.kinds.network.objects import OvsPort
from reaper.objects.host import CollectorResult
from reaper.objects.step import StepResult

LOG = logging.getLogger(__name__)

KIND = "ovs_port"
SCHEMA = "Open_vSwitch"


# What the collector and the unplug step read; nothing else is monitored.
COLUMNS = {
    "Bridge": ["name", "ports", "datapath_type"],
    "Port": ["name", "interfaces", "external_ids"],
    "Interface": ["name", "type", "external_ids", "error", "ofport"],
}
SKIP_KEY = "reaper-skip"

# python-ovs without its C JSON parser: the standard library's instead (ovsjson).
ovsjson.install()


def transact(remote: str, request: ovs.jsonrpc.Message, timeout: float):
    """One JSON-RPC request/reply on a fresh session, bounded by ``timeout`` seconds
    (python-ovs' own blocking helpers wait forever on a server that hangs)."""
    deadline = ovs.timeval.msec() + timeout * 1000
    err, strm = ovs.stream.Stream.open_block(ovs.stream.Stream.open(remote),
                                              int(timeout * 1000))
    if err:
        raise exception.OvsUnavailable(f"OVSDB {remote}: cannot connect ({_strerror(err)})")
    rpc = ovs.jsonrpc.Connection(strm)
    try:
        err = rpc.send(request)
        while not err:
            err, msg = rpc.recv()
            if err == errno.EAGAIN:
                if ovs.timeval.msec() > deadline:
                    raise exception.OvsUnavailable(
                        f"OVSDB {remote} did not answer within {timeout}s")
                rpc.run()
                poller = ovs.poller.Poller()
                rpc.wait(poller)
                rpc.recv_wait(poller)
                poller.timer_wait_until(deadline)
                poller.block()
                err = 0
                continue
            if err:
                break
            if msg.type in (ovs.jsonrpc.Message.T_REPLY, ovs.jsonrpc.Message.T_ERROR) \
                    and msg.id == request.id:
                if msg.error:
                    raise exception.OvsUnavailable(f"OVSDB {remote}: {msg.error}")
                return msg.result
        raise exception.OvsUnavailable(f"OVSDB {remote}: {_strerror(err)}")
    finally:
        rpc.close()


def plain_transact(remote: str, method: str, params: list, timeout: float):
    """``transact`` for ``unix:`` and ``tcp:`` remotes on a plain socket, the reply
    decoded by the standard ``json`` in one go: python-ovs' stream hands its parser
    4 KiB at a time, and with its pure-Python parser (ovsjson) reading a busy
    bridge's rows that way costs several times their transfer. Raises
    OvsUnavailable (cannot connect, an error reply, no reply within ``timeout``)."""
    kind, _, addr = remote.partition(":")
    deadline = time.monotonic() + timeout
    try:
        if kind == "unix":
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(timeout)
            try:
                sock.connect(addr)
            except OSError:
                sock.close()
                raise
        else:
            host, _, port = addr.rpartition(":")
            sock = socket.create_connection((host.strip("[]"), int(port)), timeout)
    except (OSError, ValueError) as e:
        raise exception.OvsUnavailable(f"OVSDB {remote}: cannot connect ({e})") from None
    try:
        sock.sendall(json.dumps({"id": 0, "method": method, "params": params}).encode())
        chunks: list[bytes] = []
        dec = json.JSONDecoder()
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise exception.OvsUnavailable(f"OVSDB {remote} did not answer within {timeout}s")
            sock.settimeout(left)
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise exception.OvsUnavailable(f"OVSDB {remote} closed the session")
            chunks.append(chunk)
            if not chunk.rstrip().endswith(b"}"):
                continue
            text = b"".join(chunks).decode()
            while text:
                try:
                    msg, end = dec.raw_decode(text)
                except ValueError:
                    break               # incomplete: read on
                text = text[end:].lstrip()
                if not isinstance(msg, dict):
                    raise exception.OvsUnavailable(f"OVSDB {remote}: not JSON-RPC")
                if msg.get("method") == "echo" and "id" in msg:     # the server's probe
                    sock.sendall(json.dumps({"id": msg["id"], "result": msg.get("params", []),
                                             "error": None}).encode())
                elif msg.get("id") == 0:
                    if msg.get("error"):
                        raise exception.OvsUnavailable(f"OVSDB {remote}: {msg['error']}")
                    return msg.get("result")
            chunks = [text.encode()] if text else []
    except (OSError, UnicodeDecodeError) as e:   # socket.timeout is an OSError
        raise exception.OvsUnavailable(f"OVSDB {remote}: {e}") from None
    finally:
        sock.close()


def _strerror(err) -> str:
    return errno.errorcode.get(err, str(err)) if isinstance(err, int) else str(err)


class _Idl(ovs_connection.OvsdbIdl):
    """ovsdbapp's IDL without its per-row ``time.sleep(0)`` (a yield for eventlet's
    green threads, which the reaper does not use): on a loaded host each of those
    gives the CPU away, and the initial dump of a busy bridge has thousands of rows.
    Other threads still run: the interpreter switches threads on its own."""

    def cooperative_yield(self):
        pass


class _Api(impl_idl.OvsdbIdl):
    """ovsdbapp's Open_vSwitch API, without ovs-vsctl's wait for ovs-vswitchd."""

    def create_transaction(self, check_error=False, log_errors=True, **kwargs):
        return ovs_transaction.Transaction(self, self.ovsdb_connection,
                                           self.ovsdb_connection.timeout,
                                           check_error, log_errors)


class OvsHandle:
    """One OVSDB connection (ovsdbapp native IDL) for collection and unplugging."""

    def __init__(self, remote: str, bridge: str, timeout: float = 10):
        self.remote = remote
        self.bridge = bridge
        self.timeout = timeout
        self._api = None
        self._lock = threading.Lock()

    def _connect(self):
        schema = transact(self.remote, ovs.jsonrpc.Message.create_request(
            "get_schema", [SCHEMA]), self.timeout)
        helper = idlutils.create_schema_helper(schema)
        for table, cols in COLUMNS.items():
            helper.register_columns(table, cols)
        idl = _Idl(self.remote, helper)
        conn = ovs_connection.Connection(idl, timeout=self.timeout)
        api_cls = type("ReaperOvsApi", (_Api,), {"_ovsdb_connection": None})
        try:
            # No ovsdbapp indexes: kept sorted through python-ovs' row attributes on
            # every row the initial dump and each update add (most of the cold
            # pass's OVS time on a busy bridge), they would only serve the unplug
            # step's lookup of one port by name, a scan of the replica without them.
            return api_cls(conn, start=True, auto_index=False)
        except Exception as e:  # noqa: BLE001 - ovsdbapp raises several kinds
            try:
                conn.stop(timeout=1)
            except Exception:  # noqa: BLE001 - best effort: the start error follows
                pass
            raise exception.OvsUnavailable(f"cannot start an OVSDB session with {self.remote}: "
                                           f"{e}") from None

    def api(self):
        """The connected API; raises OvsUnavailable when the server is not there."""
        with self._lock:
            if self._api is None:
                self._api = self._connect()
            api = self._api
        if not _synced(api.idl):
            raise exception.OvsUnavailable(f"OVSDB session with {self.remote} is disconnected "
                                           f"(reconnecting)")
        return api

    def ping(self) -> None:
        """A round trip on a fresh session: raises OvsUnavailable unless the server
        answers now (the long-lived session may not have noticed it is gone)."""
        transact(self.remote, ovs.jsonrpc.Message.create_request("echo", []), self.timeout)
        self.api()

    def close(self) -> None:
        with self._lock:
            api, self._api = self._api, None
        if api is not None:
            try:
                api.ovsdb_connection.stop(timeout=self.timeout)
            except Exception:  # noqa: BLE001 - best effort on shutdown
                pass

    def read_ports(self) -> tuple[bool, tuple[OvsPort, ...]]:
        """(bridge exists, its ports): from the IDL's replica in one go once the
        session is up, else from one ``select`` transaction on a fresh session.

        Reading never starts the IDL: its first dump through python-ovs' row
        objects costs several times the same rows read as plain JSON (most of a
        cold pass's OVS time), and only a write (the unplug step's ``api()``, which
        also re-reads here through the replica it brings up) needs it. The select
        is one atomic snapshot of the server's rows, as fresh as a synced replica.
        """
        with self._lock:
            api = self._api
        if api is None:
            return select_ports(self.remote, self.bridge, self.timeout)
        api = self.api()
        with api.ovsdb_connection.lock:
            if not _synced(api.idl):
                raise exception.OvsUnavailable(f"OVSDB session with {self.remote} is disconnected")
            bridge = _bridge_row(api.idl, self.bridge)
            if bridge is None:
                return False, ()
            try:
                return True, _fast_ports(api.idl, self.bridge, bridge)
            except (AttributeError, KeyError, TypeError) as e:   # another python-ovs
                LOG.debug("replica fast path unavailable (%s), using row attributes", e)
                return True, tuple(_port_record(self.bridge, p) for p in bridge.ports)


def select_request(bridge: str) -> list:
    """One OVSDB transaction selecting the bridge and every Port and Interface row,
    only the COLUMNS the collector reads (and the rows' uuids)."""
    return [SCHEMA,
            {"op": "select", "table": "Bridge", "where": [["name", "==", bridge]],
             "columns": COLUMNS["Bridge"]},
            {"op": "select", "table": "Port", "where": [],
             "columns": ["_uuid", *COLUMNS["Port"]]},
            {"op": "select", "table": "Interface", "where": [],
             "columns": ["_uuid", *COLUMNS["Interface"]]}]


def select_ports(remote: str, bridge: str, timeout: float) -> tuple[bool, tuple[OvsPort, ...]]:
    """(bridge exists, its ports) from one select transaction; raises OvsUnavailable."""
    if remote.startswith(("unix:", "tcp:")):
        result = plain_transact(remote, "transact", select_request(bridge), timeout)
    else:       # ssl: python-ovs' stream, with the configured certificates
        result = transact(remote, ovs.jsonrpc.Message.create_request(
            "transact", select_request(bridge)), timeout)
    try:
        for op in result:
            if isinstance(op, dict) and op.get("error"):
                raise exception.OvsUnavailable(f"OVSDB {remote}: {op['error']}: "
                                               f"{op.get('details', '')}")
        return ports_from_select(bridge, result)
    except (IndexError, KeyError, TypeError, ValueError) as e:
        raise exception.OvsUnavailable(f"OVSDB {remote}: unexpected select reply ({e})") \
            from None


def _set(value) -> list:
    """The atoms of an OVSDB set in JSON (a set of one may be the atom itself)."""
    if isinstance(value, list) and value and value[0] == "set":
        return value[1]
    return [value]


def _uuid(atom) -> str:
    if isinstance(atom, list) and len(atom) == 2 and atom[0] == "uuid":
        return atom[1]
    raise ValueError(f"not a uuid: {atom!r}")


def _map(value) -> dict:
    if isinstance(value, list) and len(value) == 2 and value[0] == "map":
        return {k: v for k, v in value[1]}
    raise ValueError(f"not a map: {value!r}")


def ports_from_select(bridge_name: str, result: list) -> tuple[bool, tuple[OvsPort, ...]]:
    """Pure: the records ``_fast_ports`` makes of the replica, from the reply to
    ``select_request`` (the bridge's ports in the order of its ``ports`` column)."""
    bridges, ports, ifaces = (op["rows"] for op in result[:3])
    if not bridges:
        return False, ()
    ports_by = {_uuid(r["_uuid"]): r for r in ports}
    ifaces_by = {_uuid(r["_uuid"]): r for r in ifaces}
    out = []
    for atom in _set(bridges[0]["ports"]):
        port_id = _uuid(atom)
        port = ports_by.get(port_id)
        if port is None:
            continue
        rows = [ifaces_by[u] for u in map(_uuid, _set(port["interfaces"])) if u in ifaces_by]
        pext = _map(port["external_ids"])
        if rows:
            i = rows[0]
            ext = _map(i["external_ids"])
            itype = i["type"] if isinstance(i["type"], str) else ""
            err, ofp = _set(i["error"]), _set(i["ofport"])
        else:
            ext, itype, err, ofp = {}, "", [], []
        out.append(_record(bridge_name, port["name"], port_id, ext, pext, itype, err, ofp,
                           len(rows)))
    return True, tuple(out)


def _synced(idl) -> bool:
    """Connected and monitoring: the replica follows the server."""
    session = getattr(idl, "_session", None)
    return bool(session is not None and session.is_connected()
                and idl.state == idl.IDL_S_MONITORING)


def _bridge_row(idl, name: str):
    try:
        return idlutils.row_by_value(idl, "Bridge", "name", name)
    except idlutils.RowNotFound:
        return None


def _fast_ports(idl, bridge_name: str, bridge) -> tuple[OvsPort, ...]:
    """The bridge's ports read from the replica's committed data.

    python-ovs' Row attribute access rebuilds the datum of every set-valued column
    on each read (~20 us); outside a transaction a row's committed data
    (``Row._data``, column -> Datum) is its value, so it is read directly here.
    Same result as ``_port_record`` (the fallback); the unit of work is one pass
    over the bridge's ports under the connection lock.
    """
    ports_tbl, ifaces_tbl = idl.tables["Port"].rows, idl.tables["Interface"].rows
    out = []
    for key in bridge._data["ports"].values:
        port = ports_tbl.get(key.value)
        if port is None:
            continue
        pd = port._data
        ifaces = [ifaces_tbl[k.value] for k in pd["interfaces"].values
                  if k.value in ifaces_tbl]
        pext = {k.value: v.value for k, v in pd["external_ids"].values.items()}
        if ifaces:
            idd = ifaces[0]._data
            ext = {k.value: v.value for k, v in idd["external_ids"].values.items()}
            itype = next(iter(idd["type"].values)).value if idd["type"].values else ""
            err = [k.value for k in idd["error"].values]
            ofp = [k.value for k in idd["ofport"].values]
        else:
            ext, itype, err, ofp = {}, "", [], []
        out.append(_record(bridge_name, next(iter(pd["name"].values)).value, str(port.uuid),
                           ext, pext, itype, err, ofp, len(ifaces)))
    return tuple(out)


def _port_record(bridge: str, port) -> OvsPort:
    ifaces = list(port.interfaces)
    iface = ifaces[0] if ifaces else None
    if iface is None:
        return _record(bridge, port.name, str(port.uuid), {}, dict(port.external_ids), "",
                       [], [], 0)
    return _record(bridge, port.name, str(port.uuid), dict(iface.external_ids),
                   dict(port.external_ids), iface.type, list(iface.error), list(iface.ofport),
                   len(ifaces))


def _record(bridge: str, name: str, uuid: str, ext: dict, pext: dict, itype: str,
            err: list, ofp: list, n_interfaces: int) -> OvsPort:
    """The OvsPort of a port, whichever way it was read (replica rows, their committed
    data, a select reply): ``ext``/``pext`` the first interface's and the port's
    external_ids, ``err``/``ofp`` the interface's optional error and ofport."""
    skip = any(str(d.get(SKIP_KEY, "")).lower() == "true" for d in (ext, pext))
    return OvsPort(
        name=name, bridge=bridge, uuid=uuid, iface_type=itype,
        iface_id=ext.get("iface-id") or None, attached_mac=ext.get("attached-mac") or None,
        vm_uuid=ext.get("vm-uuid") or ext.get("vm-id") or None,
        error=err[0] if err else None, ofport=ofp[0] if ofp else None,
        n_interfaces=n_interfaces, skip=skip, external_ids=ext)


def collect(handle: OvsHandle | None) -> CollectorResult:
    """The integration bridge's ports (none when it does not exist); ``ok=False``
    (never an exception) when OVSDB cannot be read."""
    if handle is None:
        return CollectorResult(KIND, False, error="no OVSDB handle")
    try:
        exists, ports = handle.read_ports()
    except exception.OvsUnavailable as e:
        return CollectorResult(KIND, False, error=str(e))
    except Exception as e:  # noqa: BLE001 - ovsdbapp/python-ovs errors of any kind
        LOG.warning("OVSDB read failed: %s", e)
        return CollectorResult(KIND, False, error=f"OVSDB read failed: {e}")
    if not exists:
        # Nothing can be plugged into a bridge that does not exist: no port is
        # unknown, so this is an empty result, not a failure.
        LOG.debug("integration bridge %s not in OVSDB %s", handle.bridge, handle.remote)
    return CollectorResult(KIND, True, ports)


# --------------------------------------------------------------------------
# The one write: remove a VIF's port, re-checked inside the transaction.
# --------------------------------------------------------------------------

VIF_PORT_TYPES = frozenset({"", "system", "tap"})


class DelVifPortCommand(ovs_command.BaseCommand):
    """Delete port ``name`` from ``bridge`` only if it still is the VIF we planned.

    Re-checked on the replica inside the transaction, and ``verify``-ed so that
    ovsdb-server refuses the commit if the rows changed meanwhile (ovsdbapp then
    re-runs the command on the fresh replica): the port is on ``bridge``, has one
    interface of a VIF type, its ``iface-id`` starts with ``prefix`` (equals
    ``iface_id`` when given), its ``vm-uuid``/``vm-id`` is one of ``vm_uuids``
    (None: absent), and nobody marked it ``reaper-skip``. ``result`` says what
    happened, a StepResult: DONE ("deleted"), ABSENT ("absent"), or KEPT and why
    (its text "kept: <why>").
    """

    def __init__(self, api, bridge: str, name: str, prefix: str,
                 iface_id: str | None = None, vm_uuids=(None,)):
        super().__init__(api)
        self.bridge, self.name, self.prefix = bridge, name, prefix
        self.iface_id, self.vm_uuids = iface_id, set(vm_uuids)

    def run_idl(self, txn):
        idl = self.api.idl
        if self.name == self.bridge:
            self.result = StepResult.kept("it is the bridge's own port")
            return
        try:
            port = idlutils.row_by_value(idl, "Port", "name", self.name)
        except idlutils.RowNotFound:
            self.result = StepResult.absent("absent")
            return
        br = _bridge_row(idl, self.bridge)
        if br is None or port not in br.ports:
            self.result = StepResult.kept(f"not on {self.bridge}")
            return
        ifaces = list(port.interfaces)
        why = self._refuse(port, ifaces)
        if why:
            self.result = StepResult.kept(why)
            return
        iface = ifaces[0]
        for row, col in ((br, "ports"), (port, "interfaces"), (port, "external_ids"),
                         (iface, "external_ids"), (iface, "type")):
            row.verify(col)
        br.delvalue("ports", port)
        iface.delete()
        port.delete()
        self.result = StepResult.done("deleted")

    def _refuse(self, port, ifaces) -> str | None:
        return port_refusal(_port_record(self.bridge, port), self.prefix, self.iface_id,
                            self.vm_uuids)


def port_refusal(port: OvsPort, prefix: str, iface_id: str | None,
                 vm_uuids) -> str | None:
    """Why ``port`` may not be removed as the VIF port of ``prefix`` (None: it may).

    Pure, on a record: the unplug step judges a whole VIF with it before removing
    anything, and DelVifPortCommand judges the row again inside its transaction.
    ``vm_uuids`` are the vm-uuid values the port may carry (None: absent).
    """
    if port.n_interfaces != 1:
        return f"{port.n_interfaces} interfaces"
    if port.skip:
        return f"marked {SKIP_KEY}=true"
    if port.iface_type not in VIF_PORT_TYPES:
        return f"interface type {port.iface_type!r}"
    iid = port.iface_id or ""
    if not iid.startswith(prefix) or (iface_id and iid != iface_id):
        return f"iface-id is now {iid or None!r}"
    if port.vm_uuid not in set(vm_uuids):
        return f"vm-uuid is now {port.vm_uuid!r}"
    return None


def delete_vif_port(handle: OvsHandle, bridge: str, name: str, prefix: str,
                    iface_id: str | None, vm_uuids) -> StepResult:
    """Run DelVifPortCommand in its own transaction; raises when OVSDB is down."""
    api = handle.api()
    cmd = DelVifPortCommand(api, bridge, name, prefix, iface_id, vm_uuids)
    try:
        with api.transaction(check_error=True) as txn:
            txn.add(cmd)
    except exception.OvsUnavailable:
        raise
    except Exception as e:  # noqa: BLE001 - TimeoutException, RuntimeError...
        raise exception.OvsUnavailable(
            f"deleting OVS port {name} on {bridge} failed: {e}") from None
    return cmd.result
