"""The iSCSI kind's records: what sysfs, /dev and the node records show."""
from __future__ import annotations


from reaper.objects.base import _frozen


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
