"""Rule R11 (``leaked_vif``) and the VIFs of every instance teardown. Pure.

A *VIF group* is everything on the host that carries one Neutron port id prefix
(the first 11 characters of the port uuid): the ``tap``/``qbr``/``qvb``/``qvo``
devices named with it and the integration bridge's ``tap``/``qvo`` ports whose
``iface-id`` starts with it. A group is *owned*, and never reported, when

* a live instance on our host, or one in flight to or from it, claims the port in
  its ``instance_info_caches.network_info`` (port ``id``, ``ovs_interfaceid`` or
  ``devname``) or uses it in its domain XML;
* any domain on the host (Nova's or not, whatever its state) names one of the
  group's devices in an interface of any type (``<target dev>``, ``<source
  bridge>``, ``<source dev>`` of a ``direct``/macvtap or ``network`` interface, a
  ``<hostdev type='net'>``), or carries the port id as its virtualport
  ``interfaceid``;
* one of its OVS ports' ``vm-uuid``/``vm-id`` is such a live or in-flight
  instance, or the uuid of any domain on the host.

A group is a unit: removed whole or kept whole (``unit_holds``). It is kept whole
when anything outside it uses a member, or a member may not be removed: a device
stacked on a member (macvlan, macvtap, vlan, a vxlan bound to it: its IFLA_LINK),
a foreign port of its ``qbr``, a member enslaved elsewhere, a veth whose peer is
not its partner or is in another namespace, a device with the group's name that
is not of Nova's kind, an integration bridge port with the group's name that the
reaper may not remove (no ``iface-id``, another port's ``iface-id``, an internal
or patch port, a ``qbr``/``qvb`` plugged into OVS), and for a leak a tap held open.
Such a leak is reported with action ``log`` and the reasons; an instance
teardown keeps that VIF (``vifs_kept`` in its evidence). The unplug step judges
the unit again with the same function right before removing anything.

Groups of an instance being torn down here (evacuated, running deleted,
reclaimed), found through its network_info, its domain XML and the ``vm-uuid`` of
OVS ports, go into that teardown's ``vifs`` (unless someone else owns them), so
the unplug step runs after the domain is destroyed. Every other group that
nobody owns is ``leaked_vif``, reaped by a teardown of its own, with the action
of ``[reaper] leaked_vif_action``, after the observation guard.

Whatever makes ownership uncertain turns every reap of the pass into ``log``: the
domain list or a network collector unavailable, a domain whose XML could not be
read, a live or in-flight instance without a domain here whose network_info is
missing or unreadable (not JSON, wrong types, nested too deep for the parser,
larger than ``MAX_NETWORK_INFO_CHARS``: ``parse_network_info`` never raises). Never
touched, not even listed: devices whose name or kind is not Nova's, OVS ports
without ``iface-id``, of another type than a VIF's (internal, patch, tunnels...),
with several interfaces, named like the bridge, or whose name and ``iface-id``
disagree, when nothing of Nova's carries their name, and any group with
``external_ids:reaper-skip=true``.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import re
from typing import Any, Iterable

from reaper import textmemo
from reaper.kinds.instance import rules
from reaper.kinds.network.objects import NetDevice, OvsPort
from reaper.objects.fields import Action, Classification, ResourceKind
from reaper.objects.host import Domain
from reaper.objects.plan import Finding, Plan, TeardownPlan

DEVICE_KIND = "vif"         # reaper.kinds.network.collector.KIND
OVS_KIND = "ovs_port"       # reaper.kinds.network.ovs.KIND
# A collector result with this error (and ok=True) means "network plumbing is not
# enabled for this Reaper": the extension then does nothing at all.
DISABLED = "network plumbing not enabled"
# reaper.kinds.instance.libvirt.UNKNOWN_STATE: a domain whose XML could not be read.
UNREADABLE_DOMAIN_STATE = "unknown"

PREFIX_LEN = 11
NAME_RE = re.compile(r"^(tap|qbr|qvb|qvo)([0-9a-f]{8}-[0-9a-f]{2})$")
PREFIX_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{2}")
# The device kind each name prefix must have to be Nova's (os-vif / libvirt).
ROLE_KINDS = {"tap": frozenset({"tun", "tap"}), "qbr": frozenset({"bridge"}),
              "qvb": frozenset({"veth"}), "qvo": frozenset({"veth"})}
OVS_PORT_ROLES = ("tap", "qvo")
VIF_PORT_TYPES = frozenset({"", "system", "tap"})

LEAK_UUID_PREFIX = "vif:"


def leak_name(prefix: str) -> str:
    """The teardown key (TeardownPlan.instance_uuid) of a leaked VIF group."""
    return LEAK_UUID_PREFIX + prefix


# --------------------------------------------------------------------------
# network_info
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class VifInfo:
    port_id: str
    address: str | None = None
    vif_type: str | None = None
    devname: str | None = None
    ovs_interfaceid: str | None = None
    hybrid: bool | None = None
    bridge: str | None = None

    @property
    def prefixes(self) -> set[str]:
        out = set()
        for value in (self.port_id, self.ovs_interfaceid):
            if value and PREFIX_RE.match(value):
                out.add(value[:PREFIX_LEN])
        m = NAME_RE.match(self.devname or "")
        if m:
            out.add(m.group(2))
        return out


# A network_info larger than this is not parsed: it is "malformed" (so its instance's
# ownership is uncertain). Nova's own are a few KiB per VIF; parsing a hostile
# multi-MiB value could cost hundreds of MiB of Python objects.
MAX_NETWORK_INFO_CHARS = 2 * 1024 * 1024


@textmemo.by_text
def parse_network_info(text: str | None) -> tuple[tuple[VifInfo, ...], str | None]:
    """(VIFs, problem): problem is None, "missing", "empty" or "malformed: ...".
    Remembered by text (reaper.textmemo), hence immutable; see
    ``_parse_network_info`` for the rules."""
    vifs, problem = _parse_network_info(text)
    return tuple(vifs), problem


def _parse_network_info(text: str | None) -> tuple[list[VifInfo], str | None]:
    """(VIFs, problem): problem is None, "missing", "empty" or "malformed: ...".

    Never raises, whatever the value (hostile ones included: nested too deep for
    the parser, too large, not JSON, wrong types): a value that cannot be read
    makes its instance's ownership uncertain, which the callers act on. Entries
    that cannot be read make the whole value malformed (the VIFs read so far are
    still returned: they are owned, whatever else is)."""
    if text is None:
        return [], "missing"
    if not isinstance(text, (str, bytes, bytearray)):
        return [], f"malformed: a {type(text).__name__}, not JSON text"
    if len(text) > MAX_NETWORK_INFO_CHARS:
        return [], f"malformed: {len(text)} characters, over the " \
                   f"{MAX_NETWORK_INFO_CHARS} read"
    try:
        data = json.loads(text)
        if isinstance(data, str):           # some Nova versions double-encode it
            data = json.loads(data)
    except ValueError as e:                 # JSONDecodeError, UnicodeDecodeError
        return [], f"malformed: not JSON ({str(e)[:200]})"
    except RecursionError:
        return [], "malformed: nested too deep to parse"
    except MemoryError:
        return [], "malformed: too large to parse"
    if not isinstance(data, list):
        return [], f"malformed: a JSON {type(data).__name__}, not a list of VIFs"
    if not data:
        return [], "empty"
    vifs, bad = [], []
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or not isinstance(entry.get("id"), str) \
                or not PREFIX_RE.match(entry["id"]):
            bad.append(i)
            continue
        details = entry.get("details") if isinstance(entry.get("details"), dict) else {}
        network = entry.get("network") if isinstance(entry.get("network"), dict) else {}
        hybrid = details.get("ovs_hybrid_plug")
        vifs.append(VifInfo(
            port_id=entry["id"], address=_str(entry.get("address")),
            vif_type=_str(entry.get("type")), devname=_str(entry.get("devname")),
            ovs_interfaceid=_str(entry.get("ovs_interfaceid")),
            hybrid=hybrid if isinstance(hybrid, bool) else None,
            bridge=_str(network.get("bridge"))))
    if bad:
        shown = bad[:20] + (["..."] if len(bad) > 20 else [])
        return vifs, f"malformed: entries {shown} have no usable port id"
    return vifs, None


def _excerpt(value, limit: int = 512) -> str | None:
    """The start of a network_info for the evidence, whatever its type."""
    if value is None:
        return None
    return (value if isinstance(value, str) else repr(value))[:limit]


def _str(v) -> str | None:
    return v if isinstance(v, str) and v else None


def domain_prefixes(dom: Domain) -> set[str]:
    """Port id prefixes a domain's interfaces name (target dev, source bridge,
    source dev, whatever the interface type; virtualport interfaceid)."""
    out = set()
    for iface in dom.interfaces:
        for name in iface.device_names:
            m = NAME_RE.match(name)
            if m:
                out.add(m.group(2))
        if iface.interface_id and PREFIX_RE.match(iface.interface_id):
            out.add(iface.interface_id[:PREFIX_LEN])
    return out


# --------------------------------------------------------------------------
# groups
# --------------------------------------------------------------------------

def device_is_novas(d: NetDevice) -> bool:
    return NAME_RE.match(d.name) is not None and d.kind in ROLE_KINDS.get(d.role, ())


def ovs_port_prefix(p: OvsPort) -> str | None:
    """The prefix of a port that looks like a Nova VIF's, else None (never touched)."""
    m = NAME_RE.match(p.name)
    if m is None or m.group(1) not in OVS_PORT_ROLES or p.name == p.bridge:
        return None
    if not p.iface_id or p.iface_id[:PREFIX_LEN] != m.group(2):
        return None
    if p.iface_type not in VIF_PORT_TYPES or p.n_interfaces != 1:
        return None
    return m.group(2)


@dataclasses.dataclass
class Group:
    """One VIF: the devices and integration bridge ports of one port id prefix.

    It is judged as a unit: removed whole or kept whole. ``held_ports`` and
    ``strays`` carry the unit's names but are not Nova's (an OVS port without
    ``iface-id``, a ``tap`` that is a bridge...): they are never removed, so
    nothing of the unit is.
    """
    prefix: str
    devices: list[NetDevice] = dataclasses.field(default_factory=list)
    ports: list[OvsPort] = dataclasses.field(default_factory=list)
    skip: bool = False          # a port of it says reaper-skip=true
    held_ports: list[tuple[OvsPort, str]] = dataclasses.field(default_factory=list)
    strays: list[NetDevice] = dataclasses.field(default_factory=list)

    def device(self, role: str) -> NetDevice | None:
        name = role + self.prefix
        return next((d for d in self.devices if d.name == name), None)

    @property
    def vm_uuids(self) -> set[str]:
        return {p.vm_uuid for p in self.ports if p.vm_uuid}

    @property
    def port_id(self) -> str | None:
        return next((p.iface_id for p in self.ports if p.iface_id), None)

    @property
    def members(self) -> list[str]:
        return [d.name for d in self.devices] + [p.name for p in self.ports]

    @property
    def removable(self) -> bool:
        """Anything of it the reaper could remove (else it is not even listed)."""
        return bool(self.devices or self.ports)


def held_port_reason(p: OvsPort) -> str | None:
    """Why an integration bridge port named like a VIF device is not a VIF port the
    reaper may remove (None: it is one). Such a port is never removed; because an
    OVS port is bound to the device of its name, that device stays too."""
    m = NAME_RE.match(p.name)
    if m is None or p.name == p.bridge:
        return None
    role, prefix = m.group(1), m.group(2)
    where = f"OVS port {p.name} on {p.bridge}"
    if role not in OVS_PORT_ROLES:
        return f"{where} is a {role} device plugged into OVS, not a VIF port"
    if not p.iface_id:
        return f"{where} has no iface-id (never removed, and removing its device " \
               f"would leave it dangling)"
    if p.iface_id[:PREFIX_LEN] != prefix:
        return f"{where} carries iface-id {p.iface_id}, another port's"
    if p.iface_type not in VIF_PORT_TYPES:
        return f"{where} is of type {p.iface_type!r}, not a VIF's"
    if p.n_interfaces != 1:
        return f"{where} has {p.n_interfaces} interfaces"
    return None


def build_groups(devices: Iterable[NetDevice], ports: Iterable[OvsPort]) -> dict[str, Group]:
    groups: dict[str, Group] = {}
    for d in devices:
        m = NAME_RE.match(d.name)
        if m is None:
            continue        # stacked on a VIF device: see unit_holds
        g = groups.setdefault(m.group(2), Group(m.group(2)))
        (g.devices if device_is_novas(d) else g.strays).append(d)
    for p in ports:
        prefix = ovs_port_prefix(p)
        if prefix is None:
            why = held_port_reason(p)
            if why is not None:
                held = NAME_RE.match(p.name).group(2)
                groups.setdefault(held, Group(held)).held_ports.append((p, why))
            continue
        g = groups.setdefault(prefix, Group(prefix))
        g.ports.append(p)
        g.skip = g.skip or p.skip
    return groups


# Masters a member may have besides none: its own qbr (tap, qvb), or the OVS
# kernel datapath (tap, qvo plugged into an OVS bridge).
OVS_DATAPATH_MASTER = "ovs-system"


def _allowed_masters(role: str, prefix: str) -> set[str | None]:
    return {"tap": {None, "qbr" + prefix, OVS_DATAPATH_MASTER},
            "qvb": {None, "qbr" + prefix},
            "qvo": {None, OVS_DATAPATH_MASTER},
            "qbr": {None}}[role]


def stacked_index(devices: Iterable[NetDevice]) -> dict[str, list[NetDevice]]:
    """Device name -> the devices whose link (IFLA_LINK) it is, so that finding the
    devices stacked on a VIF costs nothing per VIF."""
    out: dict[str, list[NetDevice]] = collections.defaultdict(list)
    for d in devices:
        if d.link:
            out[d.link].append(d)
    return dict(out)


def unit_holds(g: Group, stacked: dict[str, list[NetDevice]] | None = None, *,
               guest_gone: bool = True, ovs_seen: bool = True) -> list[str]:
    """Why the VIF must be kept whole: a member is used by something outside the
    unit, or may not be removed (so no member may). Pure.

    ``stacked``: ``stacked_index`` of the whole device collection;
    ``guest_gone``: the guest is gone, so a tap held open counts (False while an
    instance teardown is planned: its domain is destroyed first); ``ovs_seen``:
    the integration bridge's ports were read, so a member on the OVS datapath
    without a port there is plugged into another OVS bridge.
    """
    why = []
    partners = {"qvb": "qvo", "qvo": "qvb"}
    members = {d.name: d for d in g.devices}
    qbr = g.device("qbr")
    if qbr is not None:
        own = {"qvb" + g.prefix, "tap" + g.prefix}
        foreign = sorted(set(qbr.ports) - own)
        if foreign:
            why.append(f"bridge {qbr.name} also has ports {foreign}")
    ovs_names = {p.name for p in g.ports} | {p.name for p, _ in g.held_ports}
    for d in g.devices:
        if d.role in partners:
            if d.peer_netnsid is not None:
                why.append(f"the veth peer of {d.name} is in another namespace "
                           f"(netnsid {d.peer_netnsid})")
            elif d.peer is not None and d.peer != partners[d.role] + g.prefix:
                why.append(f"the veth peer of {d.name} is {d.peer}, not "
                           f"{partners[d.role] + g.prefix}")
        if guest_gone and d.role == "tap" and d.carrier:
            why.append(f"{d.name} has carrier: a process holds it open")
        if d.master not in _allowed_masters(d.role, g.prefix):
            why.append(f"{d.name} is a port of {d.master}")
        elif d.master == OVS_DATAPATH_MASTER and ovs_seen and d.name not in ovs_names:
            why.append(f"{d.name} is plugged into an OVS bridge other than the "
                       f"integration bridge")
    for d in g.strays:
        why.append(f"{d.name} is a {d.kind or 'device of unknown kind'}, not Nova's "
                   f"{d.role}: the name is someone else's")
    for _, reason in g.held_ports:
        why.append(reason)
    for lower in g.devices:
        for d in (stacked or {}).get(lower.name, ()):
            if d.name in members or lower.peer == d.name:
                continue        # a member, or the veth peer
            why.append(f"{d.name} ({d.kind or 'unknown kind'}) is stacked on {lower.name}")
    return why


def device_evidence(d: NetDevice) -> dict:
    return {"name": d.name, "ifindex": d.ifindex, "kind": d.kind, "mac": d.mac,
            "operstate": d.operstate, "carrier": d.carrier, "master": d.master,
            "peer": d.peer, "peer_netnsid": d.peer_netnsid, "ports": list(d.ports),
            "link": d.link}


def port_evidence(p: OvsPort) -> dict:
    return {"name": p.name, "bridge": p.bridge, "uuid": p.uuid, "type": p.iface_type,
            "iface_id": p.iface_id, "attached_mac": p.attached_mac, "vm_uuid": p.vm_uuid,
            "error": p.error, "ofport": p.ofport}


def vif_item(prefix: str, g: Group | None, *, port_id: str | None, hybrid: bool | None,
             vm_uuids: Iterable[str | None], derive_devices: bool, derive_ports: bool,
             integration_bridge: str | None) -> dict:
    """The JSON-serialisable description of one VIF the unplug step removes.

    ``devices``/``ovs_ports`` hold what the collectors saw (with ifindex / row
    uuid); when a collector was unavailable the names Nova would have used are
    added without them ("derived"), and the step removes them only if they turn
    out to be this port's.
    """
    devices = [{"name": d.name, "role": d.role, "kind": d.kind, "ifindex": d.ifindex}
               for d in (g.devices if g else ())]
    ports = [{"bridge": p.bridge, "name": p.name, "iface_id": p.iface_id, "uuid": p.uuid}
             for p in (g.ports if g else ())]
    derived = False
    if derive_devices:
        have = {d["name"] for d in devices}
        for role in ("qbr", "qvb", "qvo", "tap"):
            if role + prefix not in have:
                devices.append({"name": role + prefix, "role": role, "kind": None,
                                "ifindex": None})
                derived = True
    if derive_ports:
        have = {p["name"] for p in ports}
        for role in OVS_PORT_ROLES:
            if role + prefix not in have:
                ports.append({"bridge": integration_bridge, "name": role + prefix,
                              "iface_id": None, "uuid": None})
                derived = True
    order = {"qbr": 0, "qvb": 1, "qvo": 2, "tap": 3}
    devices.sort(key=lambda d: order[d["role"]])
    if hybrid is None and g is not None and (g.devices or g.ports):
        hybrid = g.device("qbr") is not None or any(p.name.startswith("qvo") for p in g.ports)
    return {"prefix": prefix, "port_id": port_id or (g.port_id if g else None),
            "hybrid": hybrid,
            "vm_uuids": sorted({u for u in vm_uuids if u}),
            "devices": devices, "ovs_ports": ports, "derived": derived}


def item_is_empty(item: dict) -> bool:
    return not item["devices"] and not item["ovs_ports"]


# --------------------------------------------------------------------------
# The extension
# --------------------------------------------------------------------------

@dataclasses.dataclass
class _Facts:
    """Everything ownership depends on, computed once per plan."""
    protected: dict[str, str]                   # uuid -> why (live here / in flight)
    owned: dict[str, set[str]]                  # prefix -> protected uuids claiming it
    used_by: dict[str, list[Domain]]            # prefix -> domains naming it
    domain_uuids: set[str]
    unsure: list[str]                           # why no reap is safe this pass
    network_info_findings: list[Finding]
    caches_parsed: int
    vifs_of: dict[str, tuple[tuple[VifInfo, ...], str | None]]
    stacked: dict[str, list[NetDevice]] = dataclasses.field(default_factory=dict)
    ovs_ok: bool = True


def _facts(ctx, groups: dict[str, Group], torn: set[str], dev_ok: bool,
           ovs_ok: bool, dev_err: str | None, ovs_err: str | None) -> _Facts:
    host = ctx.policy.host
    view, inv = ctx.view, ctx.inv
    migs = collections.defaultdict(list)
    for m in view.migrations:
        migs[m.instance_uuid].append(m)
    domains = list(inv.domains.items) if inv.domains.ok else []
    dom_by_uuid = {d.uuid: d for d in domains}
    unsure: list[str] = []
    if not inv.domains.ok:
        unsure.append(f"the domain list is unavailable ({inv.domains.error}): any domain "
                      f"may use any VIF")
    unreadable = [d.name for d in domains if d.state == UNREADABLE_DOMAIN_STATE]
    if unreadable:
        unsure.append(f"the XML of domain(s) {sorted(unreadable)} could not be read: they "
                      f"may use any VIF")
    if not dev_ok:
        unsure.append(f"the network device collector failed ({dev_err})")
    if not ovs_ok:
        unsure.append(f"the OVS collector failed ({ovs_err}): vm-uuid and iface-id "
                      f"cannot be checked")

    used_by: dict[str, list[Domain]] = collections.defaultdict(list)
    for dom in domains:
        for p in domain_prefixes(dom):
            used_by[p].append(dom)

    protected: dict[str, str] = {}
    for row in view.instances.values():
        if row.uuid in torn or row.deleted != 0 or row.archived:
            continue
        if row.host == host:
            protected[row.uuid] = f"live on this host (vm_state {row.vm_state})"
        elif rules.in_flight_migrations(migs.get(row.uuid, []), host):
            protected[row.uuid] = "in flight to or from this host"

    ports_by_vm = collections.defaultdict(list)
    for g in groups.values():
        for p in g.ports:
            if p.vm_uuid:
                ports_by_vm[p.vm_uuid].append(p)

    owned: dict[str, set[str]] = collections.defaultdict(set)
    findings: list[Finding] = []
    vifs_of: dict[str, tuple[tuple[VifInfo, ...], str | None]] = {}
    parsed = 0
    for uuid in sorted(set(protected) | torn):
        cache = view.info_caches.get(uuid)
        vifs, problem = parse_network_info(cache.network_info if cache else None)
        vifs_of[uuid] = (vifs, problem)
        if uuid not in protected:
            continue
        parsed += 1
        for v in vifs:
            for p in v.prefixes:
                owned[p].add(uuid)
        dom = dom_by_uuid.get(uuid)
        if dom is not None:
            for p in domain_prefixes(dom):
                owned[p].add(uuid)
        if problem is None:
            continue
        has_vifs = bool((dom is not None and dom.interfaces) or ports_by_vm.get(uuid))
        if problem == "empty" and not has_vifs:
            continue        # an instance without ports (or not plugged yet)
        fallback = []
        if dom is not None:
            fallback.append(f"domain {dom.name}'s interfaces")
        if ports_by_vm.get(uuid):
            fallback.append(f"OVS ports with vm-uuid {uuid}")
        if dom is None and problem != "empty":
            unsure.append(f"instance {uuid} ({protected[uuid]}) has {problem} network_info "
                          f"and no domain here: its devices cannot be told apart")
        row = view.instances.get(uuid)
        findings.append(Finding(
            ResourceKind.INSTANCE, uuid, uuid,
            Classification.LIVE if row is not None and row.host == host
            else Classification.IN_FLIGHT, Action.LOG,
            f"instance_info_caches.network_info is {problem}; its VIFs are matched by "
            + (" and ".join(fallback) if fallback else "nothing (no domain, no OVS port)")
            + " instead",
            {**rules.row_evidence(row), "network_info_problem": problem,
             "network_info": _excerpt(cache.network_info if cache else None),
             "fallback": fallback, "protected_because": protected[uuid]}))
    return _Facts(protected=protected, owned=owned, used_by=used_by,
                  domain_uuids={d.uuid for d in domains}, unsure=unsure,
                  network_info_findings=findings, caches_parsed=parsed, vifs_of=vifs_of,
                  stacked=stacked_index(inv.extra[DEVICE_KIND].items) if dev_ok else {},
                  ovs_ok=ovs_ok)


def _teardown_prefixes(t: TeardownPlan, facts: _Facts, dom: Domain | None,
                       groups: dict[str, Group]) -> dict[str, dict]:
    """prefix -> what tells it is this instance's (port id, hybrid, evidence)."""
    out: dict[str, dict] = {}
    vifs, _ = facts.vifs_of.get(t.instance_uuid, ((), None))
    for v in vifs:
        for p in v.prefixes:
            out.setdefault(p, {"port_id": v.port_id, "hybrid": v.hybrid,
                               "from": []})["from"].append("network_info")
    if dom is not None:
        for p in domain_prefixes(dom):
            out.setdefault(p, {"port_id": None, "hybrid": None, "from": []})["from"].append(
                "domain XML")
    for p, g in groups.items():
        if t.instance_uuid in g.vm_uuids:
            out.setdefault(p, {"port_id": g.port_id, "hybrid": None, "from": []})[
                "from"].append("OVS vm-uuid")
    return out


def _blocked(prefix: str, own_uuid: str | None, facts: _Facts,
             g: Group | None) -> str | None:
    """Why this group must not be removed (for ``own_uuid``'s teardown, or as a leak)."""
    if g is not None and g.skip:
        return "marked reaper-skip=true"
    owners = sorted(facts.owned.get(prefix, set()) - {own_uuid})
    if owners:
        return f"claimed by {'instance' if len(owners) == 1 else 'instances'} " \
               f"{', '.join(owners)} ({facts.protected[owners[0]]})"
    users = [d for d in facts.used_by.get(prefix, []) if d.uuid != own_uuid]
    if users:
        return f"used by domain {users[0].name} ({users[0].uuid})"
    if g is not None:
        others = g.vm_uuids - {own_uuid}
        live = sorted(others & set(facts.protected))
        if live:
            return f"its OVS port's vm-uuid is instance {live[0]} ({facts.protected[live[0]]})"
        here = sorted(others & facts.domain_uuids)
        if here:
            return f"its OVS port's vm-uuid {here[0]} has a domain on this host"
        if own_uuid is not None and others:
            return f"its OVS port's vm-uuid is {sorted(others)[0]}, another instance"
        if own_uuid is not None:
            # A teardown's own VIF is removed whole or not at all. (A leak with
            # holds is still reported, as log only: see _leak.)
            holds = unit_holds(g, facts.stacked, guest_gone=False, ovs_seen=facts.ovs_ok)
            if holds:
                return "kept whole: " + "; ".join(holds)
    return None


def extend(ctx) -> Plan:
    """PlanContext -> Plan: VIFs on instance teardowns, then R11."""
    plan: Plan = ctx.plan
    dres, ores = ctx.inv.extra.get(DEVICE_KIND), ctx.inv.extra.get(OVS_KIND)
    if dres is None and ores is None:
        return plan
    if any(r is not None and r.ok and r.error == DISABLED for r in (dres, ores)):
        return plan
    if not ctx.view.ok:
        return plan         # the view guard blocks the pass; nothing can be owned
    dev_ok, ovs_ok = bool(dres and dres.ok), bool(ores and ores.ok)
    groups = build_groups(dres.items if dev_ok else (), ores.items if ovs_ok else ())
    int_bridge = next((p.bridge for p in (ores.items if ovs_ok else ())), None)

    instance_teardowns = {t.instance_uuid for t in plan.teardowns
                          if t.destroys_instance or t.action is Action.RECLAIM}
    facts = _facts(ctx, groups, instance_teardowns, dev_ok, ovs_ok,
                   dres.error if dres else "not run", ores.error if ores else "not run")
    dom_by_uuid = {d.uuid: d for d in (ctx.inv.domains.items if ctx.inv.domains.ok else ())}

    # -- the VIFs of instance teardowns
    claimed: dict[str, str] = {}
    replaced: dict[int, Finding] = {}
    teardowns = []
    for t in plan.teardowns:
        if t.instance_uuid not in instance_teardowns:
            teardowns.append(t)
            continue
        items, kept = [], []
        cand = _teardown_prefixes(t, facts, dom_by_uuid.get(t.instance_uuid), groups)
        for prefix in sorted(cand):
            g = groups.get(prefix)
            why = _blocked(prefix, t.instance_uuid, facts, g) or (
                f"already unplugged by the teardown of {claimed[prefix]}"
                if prefix in claimed else None)
            if why:
                kept.append({"prefix": prefix, "kept": why})
                continue
            item = vif_item(prefix, g, port_id=cand[prefix]["port_id"],
                            hybrid=cand[prefix]["hybrid"],
                            vm_uuids=[t.instance_uuid], derive_devices=not dev_ok,
                            derive_ports=not ovs_ok, integration_bridge=int_bridge)
            item["found_by"] = sorted(set(cand[prefix]["from"]))
            if item_is_empty(item):
                continue
            claimed[prefix] = t.instance_uuid
            items.append(item)
        if items or kept:
            ev = {"vifs": [{"prefix": i["prefix"], "port_id": i["port_id"],
                            "found_by": i["found_by"],
                            "devices": [d["name"] for d in i["devices"]],
                            "ovs_ports": [p["name"] for p in i["ovs_ports"]]}
                           for i in items]}
            if kept:
                ev["vifs_kept"] = kept
            new_findings = []
            for f in t.findings:
                nf = dataclasses.replace(f, evidence={**f.evidence, **ev})
                replaced[id(f)] = nf
                new_findings.append(nf)
            t = dataclasses.replace(t, vifs=tuple(items), findings=tuple(new_findings))
        teardowns.append(t)
    findings = [replaced.get(id(f), f) for f in plan.findings]
    findings.extend(facts.network_info_findings)

    # -- R11
    policy_action = ctx.policy.action_for(Classification.LEAKED_VIF)
    if policy_action is not Action.IGNORE:
        for prefix in sorted(groups):
            if prefix in claimed:
                continue
            g = groups[prefix]
            if not g.removable or _blocked(prefix, None, facts, g):
                continue
            fs, plan_item = _leak(ctx, g, facts, policy_action, dev_ok, ovs_ok, int_bridge)
            findings.extend(fs)
            if plan_item is not None:
                teardowns.append(plan_item)
    return Plan(findings=tuple(findings), teardowns=tuple(teardowns))


def _leak(ctx, g: Group, facts: _Facts, policy_action: Action, dev_ok: bool,
          ovs_ok: bool, int_bridge: str | None) -> tuple[list[Finding], TeardownPlan | None]:
    vms = sorted(g.vm_uuids)
    vm = vms[0] if len(vms) == 1 else None
    row = ctx.view.instances.get(vm) if vm else None
    if vm is None:
        owner = "no vm-uuid on an OVS port"
    elif row is None:
        owner = f"its vm-uuid {vm} is not among this host's live or in-flight instances"
    elif row.deleted != 0 or row.archived:
        owner = f"its instance {vm} is deleted"
    else:
        owner = f"its instance {vm} is live on host {row.host!r}, not here, and not " \
                f"moving to or from here"
    reason = (f"no live or in-flight instance on this host claims port {g.port_id or g.prefix}"
              f" ({facts.caches_parsed} network_info read), no domain uses it, and {owner}")
    action = policy_action
    oddities = unit_holds(g, facts.stacked, guest_gone=True, ovs_seen=facts.ovs_ok)
    if oddities:
        action = Action.LOG if action is Action.REAP else action
        reason += "; but only logging, the VIF is kept whole: " + "; ".join(oddities)
    elif action is Action.REAP and facts.unsure:
        action = Action.LOG
        reason += "; but only logging: " + "; ".join(facts.unsure)
    common: dict[str, Any] = {
        "port_prefix": g.prefix, "port_id": g.port_id, "vm_uuid": vm,
        **({"vm_uuids": vms} if len(vms) > 1 else {}),
        "vm_row": rules.row_evidence(row)["db_row"] if vm else None,
        "group": {"devices": [d.name for d in g.devices],
                  "ovs_ports": [p.name for p in g.ports],
                  **({"held_ovs_ports": [p.name for p, _ in g.held_ports]}
                     if g.held_ports else {}),
                  **({"not_novas": [d.name for d in g.strays]} if g.strays else {})},
        "ownership": {"live_or_in_flight_instances": len(facts.protected),
                      "network_info_read": facts.caches_parsed,
                      "domains": len(facts.domain_uuids), "claimed_by": [],
                      "domains_using": []},
    }
    if oddities:
        common["oddities"] = oddities
    if facts.unsure:
        common["unsure"] = list(facts.unsure)
    fs = [Finding(ResourceKind.VIF, d.name, vm, Classification.LEAKED_VIF, action, reason,
                  {**common, "device": device_evidence(d)}) for d in g.devices]
    fs += [Finding(ResourceKind.OVS_PORT, p.name, vm, Classification.LEAKED_VIF, action,
                   reason, {**common, "ovs_port": port_evidence(p)}) for p in g.ports]
    if action is not Action.REAP:
        return fs, None
    item = vif_item(g.prefix, g, port_id=g.port_id, hybrid=None, vm_uuids=vms,
                    derive_devices=False, derive_ports=False, integration_bridge=int_bridge)
    item["found_by"] = ["leak"]
    return fs, TeardownPlan(
        instance_uuid=leak_name(g.prefix), classification=Classification.LEAKED_VIF,
        action=Action.REAP, domain_name=None, dirs=(), destroy_disks=False,
        finalize_db=False, reason=reason, findings=tuple(fs), vifs=(item,))


def reverify_leak(plan, row, migrations, policy, now) -> tuple[bool, str]:
    """A leaked VIF belongs to no instance row; the unplug step re-reads the DB's
    claims, the domains and the devices before it touches anything."""
    return True, "re-checked by the unplug step (DB claims, domains, devices, OVS rows)"
