"""The network kind's records: netlink devices and OVS ports as the collectors saw them."""
from __future__ import annotations

import dataclasses
from typing import Mapping

from reaper.objects.base import _frozen


@_frozen
class NetDevice:
    """A Linux device named like a Nova VIF (tap/qbr/qvb/qvo + 11 characters of the
    Neutron port id), or stacked on / enslaved to one (a macvlan, macvtap, vlan,
    vxlan... whose link is it, a port of a qbr): one netlink dump shows them all.
    The stacked ones carry ``role == ""`` and are never Nova's; they are listed so
    the planner can see who else uses a VIF's devices."""
    name: str
    ifindex: int
    role: str                   # "tap", "qbr", "qvb", "qvo": the name's prefix ("": none)
    port_prefix: str            # the 11 characters of the port id the name encodes
    kind: str | None            # IFLA_INFO_KIND: "bridge", "veth", "tun", ...
    mac: str | None = None
    operstate: str | None = None    # "up", "down", "unknown", ...
    carrier: bool | None = None     # a tap with carrier is held open by a process
    master: str | None = None       # the bridge (or datapath) it is a port of
    peer: str | None = None         # a veth's peer, when in the same namespace
    peer_netnsid: int | None = None  # set when the veth's peer is in another namespace
    ports: tuple[str, ...] = ()     # a bridge's ports
    # The device IFLA_LINK names in this namespace: a veth's peer, the lower device
    # of a macvlan/macvtap/vlan (a vxlan's underlay device). None: none, or in
    # another namespace.
    link: str | None = None


@_frozen
class OvsPort:
    """A port on the integration bridge, with its (first) interface, from one OVSDB read."""
    name: str
    bridge: str
    uuid: str                   # the Port row's uuid
    iface_type: str             # Interface.type: "" (system), "internal", "patch", ...
    iface_id: str | None        # external_ids:iface-id (the Neutron port id)
    attached_mac: str | None
    vm_uuid: str | None         # external_ids:vm-uuid (os-vif) or vm-id (libvirt)
    error: str | None = None    # Interface.error
    ofport: int | None = None
    n_interfaces: int = 1
    skip: bool = False          # external_ids:reaper-skip=true on the port or interface
    external_ids: Mapping[str, str] = dataclasses.field(default_factory=dict)
