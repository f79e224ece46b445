"""Plain immutable records passed between collectors, planner, guards and executor.

Collectors and the Nova view produce these; the planner consumes them and
produces Findings. Nothing here does I/O.
"""
from __future__ import annotations

import dataclasses
import datetime
import enum
from typing import Any, Mapping


def _frozen(cls):
    return dataclasses.dataclass(frozen=True, slots=True)(cls)


# --------------------------------------------------------------------------
# Host facts (collectors)
# --------------------------------------------------------------------------

@_frozen
class DomainDisk:
    target: str                 # e.g. "vda"
    device: str                 # "disk", "cdrom"
    source_type: str            # "file", "block", "network", ...
    source: str | None          # path, device, or "pool/name" for network
    serial: str | None = None   # Nova puts the Cinder volume id here
    # What a /dev or block source is on this host this pass (the domain collector
    # resolves it, never the XML parse): the kernel name its real path leads to
    # ("sdb1" for /dev/disk/by-path/...-part1) and its device number, if a block device.
    resolved: str | None = None
    devt: str | None = None     # "major:minor"


@_frozen
class DomainInterface:
    """A network device of a domain: an ``<interface>`` (any type), or a
    ``<hostdev type='net'>`` that hands a host interface to the guest."""
    type: str                   # "bridge", "ethernet", "direct", "network", "hostdev"...
    mac: str | None
    target_dev: str | None
    source_bridge: str | None
    interface_id: str | None = None  # virtualport interfaceid (OVS)
    # <source dev> (direct/macvtap, ethernet...) or a hostdev's <source><interface>:
    # a host device the guest uses without being plugged into a bridge.
    source_dev: str | None = None

    @property
    def device_names(self) -> tuple[str, ...]:
        """Every host device this interface names (target, source bridge, source dev)."""
        return tuple(n for n in (self.target_dev, self.source_bridge, self.source_dev) if n)


@_frozen
class Domain:
    uuid: str
    name: str
    state: str                  # "running", "paused", "shutoff", ...
    nova_owned: bool            # carries Nova's metadata namespace or instance name
    nova_uuid: str | None       # uuid from Nova's metadata, if any
    disks: tuple[DomainDisk, ...] = ()
    interfaces: tuple[DomainInterface, ...] = ()
    # Every local path the domain's XML names (disk sources and their backing
    # chains, loader/NVRAM, kernel/initrd/dtb, console logs, filesystem dirs...),
    # as the collector resolved them to real paths: a directory holding any of
    # them is in use by this domain.
    files: tuple[str, ...] = ()

    @property
    def active(self) -> bool:
        return self.state not in ("shutoff", "crashed", "nostate")

    @property
    def readable(self) -> bool:
        """False for a domain whose XML could not be read or understood (the collector
        records its state as "unknown"): nothing is known of the files it uses."""
        return self.state != "unknown"


class DirKind(str, enum.Enum):
    INSTANCE = "instance"      # <uuid>
    RESIZE = "resize"          # <uuid>_resize
    DELETING = "del"           # <uuid>_del


@_frozen
class InstanceDir:
    name: str                   # basename under instances_path
    uuid: str
    kind: DirKind
    path: str
    size_bytes: int
    mtime: float


@_frozen
class CollectorResult:
    """What one collector saw; ``ok=False`` marks its kind unavailable for the pass."""
    kind: str
    ok: bool
    items: tuple = ()
    error: str | None = None


@_frozen
class Inventory:
    domains: CollectorResult
    dirs: CollectorResult
    instances_fs_type: str | None = None   # filesystem holding instances_path
    # Further resource kinds (network devices, OVS ports, iSCSI sessions...), keyed
    # by CollectorResult.kind; each comes with one collector and planner extension.
    extra: Mapping[str, CollectorResult] = dataclasses.field(default_factory=dict)

    def local_uuids(self) -> frozenset[str]:
        uuids = set()
        if self.domains.ok:
            uuids.update(d.uuid for d in self.domains.items if d.nova_owned)
        if self.dirs.ok:
            uuids.update(d.uuid for d in self.dirs.items)
        return frozenset(uuids)


# --------------------------------------------------------------------------
# Nova facts (DB view)
# --------------------------------------------------------------------------

@_frozen
class InstanceRow:
    id: int
    uuid: str
    host: str | None
    node: str | None
    vm_state: str | None
    task_state: str | None
    power_state: int | None
    deleted: int
    deleted_at: datetime.datetime | None
    display_name: str | None = None
    project_id: str | None = None
    user_id: str | None = None
    archived: bool = False      # found only in shadow_instances

    @property
    def is_deleted(self) -> bool:
        return self.deleted != 0 or self.archived

    @property
    def is_soft_deleted(self) -> bool:
        return self.deleted == 0 and self.vm_state == "soft-delete"

    @property
    def is_claimed(self) -> bool:
        """What a reclaim claim leaves, and also what Nova's own (force) delete of a
        soft-deleted instance looks like: only a ClaimMarker tells them apart."""
        return (self.deleted == 0 and not self.archived and self.vm_state == "soft-delete"
                and self.task_state == "deleting")


@_frozen
class MigrationRow:
    id: int
    uuid: str | None
    instance_uuid: str
    source_compute: str | None
    dest_compute: str | None
    source_node: str | None
    dest_node: str | None
    status: str | None
    migration_type: str | None
    deleted: int


@_frozen
class BdmRow:
    id: int
    instance_uuid: str
    volume_id: str | None
    source_type: str | None
    destination_type: str | None
    device_name: str | None
    delete_on_termination: bool
    connection_info: str | None
    attachment_id: str | None


@_frozen
class InfoCacheRow:
    instance_uuid: str
    network_info: str | None


@_frozen
class ComputeNodeRow:
    id: int
    uuid: str | None
    host: str | None
    hypervisor_hostname: str | None


@_frozen
class NovaView:
    """Everything the planner needs from Nova's DB, fetched in a fixed number of queries.

    ``instances`` holds rows for our host plus every uuid seen locally (deleted
    rows included); ``migrations`` those touching our host or the local uuids.
    """
    ok: bool
    instances: Mapping[str, InstanceRow] = dataclasses.field(default_factory=dict)
    migrations: tuple[MigrationRow, ...] = ()
    bdms: tuple[BdmRow, ...] = ()
    info_caches: Mapping[str, InfoCacheRow] = dataclasses.field(default_factory=dict)
    compute_nodes: tuple[ComputeNodeRow, ...] = ()
    # instance uuid -> the live ``reaper_claim`` system_metadata values of our host's
    # rows that are claimed (soft-delete, task_state 'deleting'); see ClaimMarker.
    claim_markers: Mapping[str, tuple[str, ...]] = dataclasses.field(default_factory=dict)
    queries: int = 0
    error: str | None = None
    # reaper.nova.changes.Fingerprint of exactly these rows, when asked for
    fingerprint: object | None = None


# The instance_system_metadata key of a reclaim claim. system_metadata is Nova's own,
# API-invisible key/value store per instance; Nova soft-deletes it with the instance
# and hard-deletes a key it removes, so the marker can leave no trace.
CLAIM_MARKER_KEY = "reaper_claim"
CLAIM_MARKER_MAX = 255          # instance_system_metadata.value is VARCHAR(255)


@_frozen
class ClaimMarker:
    """Who claimed a reclaim: ``<host>:<naive UTC ISO time>:<pass id>``.

    Written in the claim's transaction, so a claimed row tells by itself whether this
    host claimed it, even when the journal that drove the reclaim is lost. A host name
    has no ':' and a pass id has none either, so the time in between may.
    """
    host: str
    claimed_at: str
    pass_id: str

    @property
    def value(self) -> str:
        return f"{self.host}:{self.claimed_at}:{self.pass_id}"

    @classmethod
    def make(cls, host: str, now: datetime.datetime, pass_id: str) -> "ClaimMarker":
        return cls(host, now.replace(microsecond=0).isoformat(), pass_id or "-")

    @classmethod
    def parse(cls, value: str | None) -> "ClaimMarker | None":
        """None for anything not written by :meth:`value`."""
        if not value or ":" not in value:
            return None
        host, rest = value.split(":", 1)
        if ":" not in rest:
            return None
        claimed_at, pass_id = rest.rsplit(":", 1)
        if not host or not claimed_at or not pass_id:
            return None
        return cls(host, claimed_at, pass_id)


# --------------------------------------------------------------------------
# Planner output
# --------------------------------------------------------------------------

class Classification(str, enum.Enum):
    LIVE = "live"
    EVACUATED = "evacuated"
    IN_FLIGHT = "in_flight"
    FOREIGN = "foreign"
    RUNNING_DELETED = "running_deleted"
    UNKNOWN = "unknown"
    RECLAIMABLE = "reclaimable"
    # a power-off ahead of an evacuation that is still running (accepted, pre-migrating)
    EVACUATING = "evacuating"
    # the newest evacuation from this host failed: its guest stays as it is, reported
    EVACUATION_FAILED = "evacuation_failed"
    # a reclaim this host claimed (its marker) that no journal entry drives any more,
    # and that no longer justifies a reclaim: the claim is released
    STRANDED_CLAIM = "stranded_claim"
    # a claimed row (soft-delete, task_state 'deleting') this host cannot prove is
    # its own claim (no marker: e.g. Nova's force-delete; another host's marker)
    FOREIGN_CLAIM = "foreign_claim"
    ORPHAN_DIR = "orphan_dir"
    STALE_RESIZE = "stale_resize"
    INTERRUPTED_DELETE = "interrupted_delete"
    ATTACHMENT_DRIFT = "attachment_drift"
    LEAKED_ISCSI = "leaked_iscsi"
    LEAKED_VIF = "leaked_vif"
    # not yet actionable: waiting for a timeout / interval to pass
    PENDING = "pending"


class Action(str, enum.Enum):
    NONE = "none"
    IGNORE = "ignore"
    LOG = "log"
    SHUTDOWN = "shutdown"
    REAP = "reap"
    RECLAIM = "reclaim"
    RELEASE = "release"         # give a stranded claim back to Nova (task_state NULL)

    @property
    def destructive(self) -> bool:
        return self in (Action.SHUTDOWN, Action.REAP, Action.RECLAIM)


class ResourceKind(str, enum.Enum):
    DOMAIN = "domain"
    INSTANCE_DIR = "instance_dir"
    VIF = "vif"
    OVS_PORT = "ovs_port"
    ISCSI_SESSION = "iscsi_session"
    VOLUME_ATTACHMENT = "volume_attachment"
    INSTANCE = "instance"       # a reclaim with nothing left on the host but the row


@_frozen
class Finding:
    kind: ResourceKind
    resource: str               # domain name, dir path, device name...
    instance_uuid: str | None
    classification: Classification
    action: Action
    reason: str
    evidence: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def key(self) -> str:
        """Stable identity used by the observation guard."""
        return f"{self.kind.value}:{self.resource}"


@_frozen
class TeardownPlan:
    """The executor's unit of work: one instance's ordered teardown."""
    instance_uuid: str
    classification: Classification
    action: Action
    domain_name: str | None     # None when no domain is left
    dirs: tuple[str, ...]       # absolute paths of the instance's dirs to delete
    destroy_disks: bool
    finalize_db: bool           # reclaim only
    reason: str
    findings: tuple[Finding, ...] = ()
    # Filled by planner extensions: what the unplug / disconnect steps remove.
    # Items are JSON-serialisable dicts so the journal can resume them.
    vifs: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()
    # Whether instances_path looked shared when planned (None: unsure); the
    # compare-and-act re-check of a directory teardown needs it.
    shared_storage: bool | None = None
    # A stranded claim of this host (its ClaimMarker value) found on the row: the claim
    # step adopts exactly this claim instead of making a new one, and a release step
    # releases exactly it.
    claim_marker: str | None = None
    # The service steps (reaper.services step names, in Nova's order) that run after
    # the host teardown and before finalize_db, and the instance's facts they act on
    # (reaper.services.InstanceFacts.to_dict()): journaled, so a step retried in a
    # later pass acts on what was planned even after the Nova rows are gone.
    services: tuple[str, ...] = ()
    service_facts: Mapping[str, Any] | None = None

    @property
    def destroys_instance(self) -> bool:
        return self.domain_name is not None and self.action in (Action.REAP, Action.RECLAIM)


@_frozen
class GuardResult:
    name: str
    tripped: bool
    reason: str
    scope: str = "pass"          # "pass" blocks everything; otherwise a resource kind
    evidence: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@_frozen
class Plan:
    findings: tuple[Finding, ...]
    teardowns: tuple[TeardownPlan, ...]


# --------------------------------------------------------------------------
# iSCSI (reaper.kinds.iscsi.collector): CollectorResult("iscsi_session").items holds
# IscsiSession, IscsiNode, DmMap, BlockPartition, IscsiBootTarget and
# IscsiOperatorNote records.
# --------------------------------------------------------------------------

@_frozen
class ScsiDevice:
    """One LUN of an iSCSI session, as sysfs shows it."""
    name: str                   # block device, "sdb"
    hctl: str                   # "3:0:0:1"
    lun: int
    state: str | None = None    # sysfs device/state: "running", "offline", ...
    wwid: str | None = None     # sysfs device/wwid
    dev: str | None = None      # "major:minor"
    paths: tuple[str, ...] = ()     # every /dev path leading to it (by-path, by-id...)
    holders: tuple[str, ...] = ()   # devices stacked on the disk itself ("dm-0", "md127")
    open_pids: tuple[int, ...] = ()  # processes holding it open
    mounted: bool = False
    partitions: tuple[str, ...] = ()    # its partitions ("sdb1"): BlockPartition records
    mountpoints: tuple[str, ...] = ()   # where it is mounted (mountinfo, by major:minor)
    swap: bool = False                  # in /proc/swaps


@_frozen
class BlockPartition:
    """A partition of an iSCSI disk (or of a device stacked on one), from sysfs
    (``/sys/block/sdX/sdXN``); what uses it makes its disk used."""
    name: str                   # "sdb1"
    disk: str                   # the device it is a partition of: "sdb", "md127"
    dev: str | None = None      # "major:minor"
    paths: tuple[str, ...] = ()     # /dev/sdb1, ...-lun-0-part1, by-uuid...
    holders: tuple[str, ...] = ()   # devices stacked on it (an LVM PV's maps, md)
    open_pids: tuple[int, ...] = ()
    mountpoints: tuple[str, ...] = ()
    swap: bool = False


@_frozen
class DmMap:
    """A device stacked on iSCSI devices, at any depth: a device-mapper map
    (multipath, dm-crypt, LVM), an md array (``kind`` "md"), or a holder sysfs
    does not describe (``kind`` "unknown")."""
    name: str                   # "dm-0"
    dm_name: str | None         # /dev/mapper/<dm_name>
    uuid: str | None            # "mpath-<wwid>" for multipath maps
    slaves: tuple[str, ...] = ()
    holders: tuple[str, ...] = ()
    paths: tuple[str, ...] = ()
    open_pids: tuple[int, ...] = ()
    mounted: bool = False
    kind: str = "dm"            # "dm", "md", "unknown"
    dev: str | None = None      # "major:minor"
    partitions: tuple[str, ...] = ()
    mountpoints: tuple[str, ...] = ()
    swap: bool = False

    @property
    def multipath(self) -> bool:
        return self.kind == "dm" and (self.uuid or "").startswith("mpath-")

    @property
    def in_use(self) -> bool:
        return bool(self.holders or self.open_pids or self.mounted or self.mountpoints
                    or self.swap)


@_frozen
class IscsiSession:
    transport: str              # "tcp", "iser"
    sid: str
    portal: str                 # "ip:port" as iscsiadm prints it ("[v6]:port")
    tpgt: str
    iqn: str
    host_no: int | None = None
    devices: tuple[ScsiDevice, ...] = ()
    node_type: str = "non-flash"    # "flash": a firmware/boot session, never ours


@_frozen
class IscsiNode:
    """A node record (``iscsiadm -m node``): what iscsid logs into at start-up."""
    portal: str
    tpgt: str
    iqn: str


@_frozen
class IscsiBootTarget:
    """A target the firmware booted the host from (``/sys/firmware/ibft/target*``,
    ``/sys/firmware/iscsi_boot*/target*``): its sessions are the host's own."""
    portal: str                 # "ip:port" ("[v6]:port")
    iqn: str
    source: str                 # "ibft", "iscsi_boot0"


@_frozen
class IscsiOperatorNote:
    """A session the reaper could not disconnect by any means it has (kept in the
    state DB by the disconnect step, read back with the collector's result): it is
    reported as needing an operator instead of being retried every pass."""
    portal: str
    iqn: str
    sid: str
    reason: str
    since: str                  # ISO timestamp of the failed attempt


# --------------------------------------------------------------------------
# Network plumbing (reaper.kinds.network.collector / reaper.kinds.network.ovs):
# CollectorResult("vif").items holds NetDevice, CollectorResult("ovs_port") OvsPort.
# --------------------------------------------------------------------------

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
