"""What the collectors saw on the host: domains, instance directories, collector results."""
from __future__ import annotations

import dataclasses
from typing import Mapping

from reaper.objects.base import _frozen
from reaper.objects.fields import DirKind


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
