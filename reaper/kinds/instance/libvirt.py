"""Collector of libvirt domains: what exists on this host, whoever defined it.

Read-only. Ownership is decided here only as a fact ("carries Nova's metadata or
Nova's name"); what to do about a domain is the planner's business.

Cost per pass: one ``getAllDomainStats(STATE)`` (list and run state of every
domain in a single, atomic call) plus one ``XMLDesc(0)`` per domain, made on a thread
of their own ahead of the parsing (``_fetched``). Per-domain ``state()`` calls are only
made on drivers without the bulk stats API. The paths a
domain's XML names are resolved to real paths on every pass (a few ``lstat`` each,
never cached from one pass to the next: a symlink may change between passes; within
a pass each directory is resolved once), so the planner compares them with the
resolved instance directories.

A domain whose XML cannot be read or is hostile (a DTD or entities, huge
attributes) is kept as a placeholder with state "unknown" and logged; the pass
goes on.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import queue
import re
import stat
import threading
import xml.etree.ElementTree as ET

import libvirt
from oslo_log import log as logging

from reaper.objects.host import CollectorResult, Domain, DomainDisk, DomainInterface

LOG = logging.getLogger(__name__)


NOVA_NS_PREFIX = "http://openstack.org/xmlns/libvirt/nova/"
UUID_RE = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

STATE_NAMES = {
    libvirt.VIR_DOMAIN_NOSTATE: "nostate",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "blocked",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "shutdown",
    libvirt.VIR_DOMAIN_SHUTOFF: "shutoff",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
# Recorded for a domain whose XML could not be read or understood; such a domain
# is never Nova's for the planner, and Domain.active treats it as in use.
UNKNOWN_STATE = "unknown"

# Errors after which the connection itself is unusable: the whole view is then
# incomplete, so the collector fails rather than report a partial host.
_CONNECTION_ERRORS = frozenset({
    libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_ERR_RPC,
    libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_ERR_AUTH_FAILED,
})


def open_connection(uri: str) -> libvirt.virConnect:
    """Open ``uri``; libvirt's default handler would print every error to stderr,
    including the expected ones (a domain vanished), so it is silenced first."""
    libvirt.registerErrorHandler(_ignore_error, None)
    return libvirt.open(uri)


def _ignore_error(_ctx, _err) -> None:
    pass


# --------------------------------------------------------------------------
# instance_name_template -> regex
# --------------------------------------------------------------------------

_SPEC_RE = re.compile(r"%(?:\((?P<key>[^)]*)\))?(?P<flags>[#0\- +]*)(?P<width>\d*)"
                      r"(?P<prec>\.\d*)?(?P<conv>[a-zA-Z%])")


def _int_regex(m: re.Match) -> str | None:
    conv, flags, prec = m.group("conv"), m.group("flags"), m.group("prec")
    w = int(m.group("width") or 0)
    digits = {"d": "0-9", "i": "0-9", "u": "0-9", "s": "0-9",
              "x": "0-9a-f", "X": "0-9A-F", "o": "0-7"}.get(conv)
    if digits is None or prec or flags.replace("0", "") \
            or (w > 1 and ("0" not in flags or conv == "s")):
        return None         # signs, precision, space padding: not worth guessing
    if w > 1:
        # exactly w digits (zero padded), or more, then without a leading zero
        return f"(?:[{digits}]{{{w}}}|[{digits.replace('0', '1', 1)}][{digits}]{{{w},}})"
    return f"(?:0|[{digits.replace('0', '1', 1)}][{digits}]*)"


def template_regex(template: str) -> re.Pattern | None:
    """The names Nova's ``instance_name_template`` can produce, or None if it
    cannot be turned into a regex without matching names Nova never makes.

    Nova formats the template with the instance id (``instance-%08x``) or, when
    that fails, with a dict of instance fields (``%(uuid)s``); only ``id`` and
    ``uuid`` identify an instance, so other keys make the template unusable.
    """
    parts, pos, keyed, positional = [], 0, False, 0
    for m in _SPEC_RE.finditer(template):
        if "%" in template[pos:m.start()]:
            return None
        parts.append(re.escape(template[pos:m.start()]))
        pos = m.end()
        key, conv = m.group("key"), m.group("conv")
        if conv == "%" and key is None:
            parts.append("%")
            continue
        if key is None:
            positional += 1
            part = _int_regex(m)
        else:
            keyed = True
            if key == "uuid" and m.group(0) == "%(uuid)s":
                part = UUID_RE
            elif key == "id":
                part = _int_regex(m)
            else:
                part = None
        if part is None:
            return None
        parts.append(part)
    if "%" in template[pos:] or (keyed and positional) or positional > 1 \
            or not (keyed or positional):
        return None
    parts.append(re.escape(template[pos:]))
    return re.compile("".join(parts))


# --------------------------------------------------------------------------
# XML
# --------------------------------------------------------------------------

def _disk_source(disk: ET.Element) -> str | None:
    src = disk.find("source")
    if src is None:
        return None
    if disk.get("type") == "network":
        proto, name = src.get("protocol"), src.get("name")
        return f"{proto}:{name}" if proto and name else (name or None)
    if disk.get("type") == "volume" and src.get("volume"):
        return f"{src.get('pool')}/{src.get('volume')}"
    for attr in ("file", "dev", "dir", "name"):
        if src.get(attr):
            return src.get(attr)
    return None


def parse_domain_xml(xml: str, state: str, name_re: re.Pattern | None) -> Domain:
    """Raises ValueError for XML without a valid uuid or that libvirt would never write
    (a DTD, entity declarations, huge attributes), ET.ParseError for non-XML.

    ``files`` holds the paths as the XML spells them; the collector resolves them.
    One walk over the top-level elements and <devices>, one over everything but
    <metadata> for the paths: this runs once per version of a domain's XML.
    """
    _refuse_hostile(xml)
    root = ET.fromstring(xml)
    uuid = name = ""
    nova_meta = False
    disks, ifaces, files = [], [], {}
    # No attribute is longer than the text it is in (entities, the one way to grow
    # one, were refused above): XML shorter than the limit skips the per-attribute check.
    check_size = len(xml) > MAX_ATTRIBUTE_CHARS
    for el in root:
        tag = el.tag
        if tag == "uuid":
            uuid = (el.text or "").strip().lower()
        elif tag == "name":
            name = (el.text or "").strip()
        elif tag == "metadata":
            nova_meta = any(child.tag.startswith(_NOVA_TAG) for child in el)
        elif tag == "devices":
            for dev in el:
                if dev.tag == "disk":
                    disks.append(_disk(dev))
                elif dev.tag in _NET_DEVICE_TAGS:
                    iface = _interface(dev)
                    if iface is not None:
                        ifaces.append(iface)
        if tag not in _NO_PATHS:
            _collect_paths(el, files, check_size)
    if not _UUID_FULL.fullmatch(uuid):
        raise ValueError(f"no valid <uuid> in domain XML ({uuid!r})")
    nova = nova_meta or bool(name_re and name_re.fullmatch(name))
    return Domain(uuid=uuid, name=name, state=state, nova_owned=nova,
                  nova_uuid=uuid if nova else None, disks=tuple(disks), interfaces=tuple(ifaces),
                  files=tuple(files))


# libvirt re-serialises every domain XML it stores: it never writes a DTD (so no
# entity is ever declared, let alone expanded), and no attribute it writes is longer
# than a path. XML that does either did not come from libvirt as such; it is refused
# before parsing, so ElementTree never expands an internal entity (it would: expat
# only stops exponential "billion laughs" growth, and rejects external entities).
MAX_XML_CHARS = 16 * 1024 * 1024
MAX_ATTRIBUTE_CHARS = 64 * 1024
# Top-level elements that hold no path of the domain (free text, identity, and
# <metadata>, which is other programs' data, not a source libvirt opens).
_NO_PATHS = frozenset({"name", "uuid", "title", "description", "metadata"})
# A path inside a value: the whole value, or a part after "=", "," or blank, as in
# a <qemu:arg value='file=/var/lib/nova/instances/.../disk,if=virtio'/>.
_PATH_IN_VALUE = re.compile(r"(?:^|(?<=[=,\s]))/[^,\s]*")


def _refuse_hostile(xml: str) -> None:
    if len(xml) > MAX_XML_CHARS:
        raise ValueError(f"domain XML of {len(xml)} characters (more than {MAX_XML_CHARS})")
    if "<!DOCTYPE" in xml or "<!ENTITY" in xml:
        raise ValueError("domain XML with a DTD or entity declarations (libvirt never writes "
                         "one): not parsed")


def _collect_paths(top: ET.Element, found: dict, check_size: bool = True) -> None:
    """Every absolute path in the attributes and leaf texts under ``top``, in order.

    Deliberately wider than the elements known to name files (disk sources and
    <backingStore>/<mirror>/<dataStore> chains, <loader>, <nvram>, <kernel>,
    <initrd>, <dtb>, <log file>, char devices' <source path>, <filesystem>'s
    <source dir>, sockets...): a path that is not a file only pins more.
    ``check_size`` False: the caller knows no attribute can be huge.
    """
    paths_in = _paths_in
    for el in top.iter():
        for value in el.attrib.values():
            if check_size and len(value) > MAX_ATTRIBUTE_CHARS:
                raise ValueError(f"attribute of {len(value)} characters on <{el.tag}> "
                                 f"(more than {MAX_ATTRIBUTE_CHARS}): libvirt writes none")
            if "/" in value:
                paths_in(value, found)
        text = el.text
        if text and "/" in text and len(el) == 0:
            paths_in(text.strip(), found)


def _paths_in(value: str, found: dict) -> None:
    if value.startswith("/"):
        found[value] = None
    for m in _PATH_IN_VALUE.finditer(value):
        found[m.group(0)] = None


_NOVA_TAG = "{" + NOVA_NS_PREFIX
_UUID_FULL = re.compile(UUID_RE)


def _disk(d: ET.Element) -> DomainDisk:
    target = serial = None
    for child in d:
        if child.tag == "target":
            target = child.get("dev")
        elif child.tag == "serial":
            serial = (child.text or "").strip() or None
    return DomainDisk(target=target or "", device=d.get("device", "disk"),
                      source_type=d.get("type", "file"), source=_disk_source(d), serial=serial)


# <interface> of any type, and <hostdev type='net'> (a host interface given to the
# guest, as LXC does): both make a domain a user of host network devices.
_NET_DEVICE_TAGS = frozenset({"interface", "hostdev"})


def _interface(i: ET.Element) -> DomainInterface | None:
    """Every host device an interface names, whatever its type: ``<target dev>``,
    ``<source bridge>`` and ``<source dev>`` (``direct`` macvtap, a ``network``
    interface's live source, ``ethernet``...). None for a hostdev that names no
    host interface (a PCI device)."""
    if i.tag == "hostdev":
        name = (i.findtext("source/interface") or "").strip()
        if not name:
            return None
        return DomainInterface(type="hostdev", mac=None, target_dev=None,
                               source_bridge=None, source_dev=name)
    mac = target = bridge = source_dev = iface_id = None
    for child in i:
        tag = child.tag
        if tag == "mac":
            mac = child.get("address")
        elif tag == "target":
            target = child.get("dev")
        elif tag == "source":
            bridge = child.get("bridge")
            source_dev = child.get("dev")
        elif tag == "virtualport":
            params = child.find("parameters")
            iface_id = params.get("interfaceid") if params is not None else None
    return DomainInterface(type=i.get("type", ""), mac=mac, target_dev=target,
                           source_bridge=bridge, interface_id=iface_id,
                           source_dev=source_dev)


# --------------------------------------------------------------------------
# The collector
# --------------------------------------------------------------------------

def resolve_files(paths, dirs: dict | None = None,
                  chains: dict | None = None) -> tuple[str, ...]:
    """The real paths a domain's file sources depend on, so that they compare with the
    (resolved) instance directories whatever the spelling: symlinks, ``//``, ``..``.

    For each path: the path with its directory resolved (the name the domain opens,
    even when that is itself a symlink), then each hop of a symlinked file down to
    its target; a directory holding any of them is in use. Unresolvable parts stay as
    they are (realpath does not need the file to exist).

    ``dirs`` memoizes the real path of each directory, ``chains`` the hops of each
    path, for the caller's one pass (the collector shares them between the domains of
    a pass, which name the same few directories and some of the same files:
    /dev/disk/by-path, /dev/urandom, an instance directory for several files); they
    never outlive the pass, since a symlink may change between passes.
    """
    if dirs is None:
        dirs = {}
    out: dict[str, None] = {}
    for path in paths:
        if not path.startswith("/"):
            continue
        for real in _chain(path, dirs, chains)[0]:
            out[real] = None
    return tuple(out)


def _chain(path: str, dirs: dict, chains: dict | None) -> tuple[tuple[str, ...], bool]:
    """(the paths resolve_files records for ``path``, whether its hops were all found:
    on an error, the hops found before it and the path normalized); memoized in
    ``chains`` (one pass's) when given."""
    if chains is not None:
        got = chains.get(path)
        if got is not None:
            return got
    hops: list[str] = []
    ok = True
    try:
        for real in _symlink_hops(path, dirs):
            hops.append(real)
    except (OSError, ValueError) as e:
        LOG.debug("cannot resolve %s: %s", path, e)
        hops.append(os.path.normpath(path))
        ok = False
    got = (tuple(hops), ok)
    if chains is not None:
        chains[path] = got
    return got


def _realdir(head: str, dirs: dict) -> str:
    """``os.path.realpath(head)``, built on the memoized real path of its parent: one
    ``lstat`` per directory not yet seen this pass (the instance directories of a
    host share every ancestor), instead of one per component of each.

    realpath gives up on a symlink loop and keeps the rest of the path as spelled;
    a directory whose real path went through one (see ``_looped``) is marked, and
    the directories under it are then given realpath's own answer."""
    real = dirs.get(head)
    if real is None:
        parent, name = os.path.split(head)
        if not parent or not name or name in (".", "..") or parent == head:
            real = _checked_realpath(head, dirs)
        else:
            base = _realdir(parent, dirs)
            looped = dirs.get(_LOOPED)
            if looped and parent in looped:
                real = _checked_realpath(head, dirs)
            else:
                real = os.path.join(base, name)
                try:
                    link = stat.S_ISLNK(os.lstat(real).st_mode)
                except OSError:
                    link = False        # missing: kept as spelled, as realpath does
                if link:
                    real = _checked_realpath(head, dirs)
        dirs[head] = real
    return real


# The key, in a pass's ``dirs`` memo, of the set of directories whose real path went
# through a symlink loop.
_LOOPED = ("looped",)


def _checked_realpath(head: str, dirs: dict) -> str:
    real = os.path.realpath(head)
    if _looped(real):
        dirs.setdefault(_LOOPED, set()).add(head)
    return real


def _looped(real: str) -> bool:
    """Whether realpath's answer still holds a symlink: it met a loop (it returns
    the link with the rest of the path unresolved), the one case where it is not
    the parent's real path joined with the name."""
    prefix = ""
    for part in real.split("/")[1:]:
        prefix = f"{prefix}/{part}"
        try:
            if stat.S_ISLNK(os.lstat(prefix).st_mode):
                return True
        except OSError:
            continue
    return False


def _symlink_hops(path: str, dirs: dict, max_hops: int = 40):
    for _ in range(max_hops):
        head, tail = os.path.split(path)
        if tail in ("", ".", ".."):
            yield os.path.realpath(path)
            return
        real = os.path.join(_realdir(head, dirs), tail)
        yield real
        try:
            target = os.readlink(real)
        except OSError:
            return          # not a symlink (or gone): the end of the chain
        path = os.path.join(os.path.dirname(real), target)
    yield os.path.realpath(path)


def _list_with_states(conn) -> list[tuple[libvirt.virDomain, int | None]]:
    try:
        return [(dom, stats.get("state.state"))
                for dom, stats in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)]
    except libvirt.libvirtError as e:
        if e.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
    return [(dom, None) for dom in conn.listAllDomains(0)]


def resolve_block_disks(dom: Domain, dirs: dict | None = None,
                        chains: dict | None = None) -> Domain:
    """Each block-device source (``type='block'``, or any source under /dev) as this
    host sees it now: the kernel name its real path leads to and its device number.
    Done per pass, outside the parse cache: a by-path link may lead to another device
    after a re-login. A source that does not exist stays unresolved.

    ``dirs`` and ``chains``: the pass's memos of resolve_files; the source's real path
    is then the last hop resolve_files already found this pass (no second realpath).
    """
    disks, changed = _resolved_disks(dom.disks, {} if dirs is None else dirs, chains)
    return dataclasses.replace(dom, disks=disks) if changed else dom


def _resolved_disks(disks, dirs: dict, chains: dict | None) -> tuple[tuple, bool]:
    out, changed = [], False
    for d in disks:
        src = d.source
        if src and src.startswith("/") and (d.source_type == "block"
                                            or src.startswith("/dev/")):
            real, st = _real_stat(src, dirs, chains)
            resolved = devt = None
            if real is not None:
                head, name = os.path.split(real)
                resolved = name if head == "/dev" else None
                if stat.S_ISBLK(st.st_mode):
                    devt = f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"
            if resolved or devt:
                d = dataclasses.replace(d, resolved=resolved, devt=devt)
                changed = True
        out.append(d)
    return (tuple(out) if changed else disks), changed


def _real_stat(src: str, dirs: dict, chains: dict | None):
    """(real path, its stat) of an existing ``src``, else (None, None). The end of
    the hop chain when it is not itself a symlink (the chain stopped on an error, or
    after too many hops: then realpath decides, as it did before the chain was
    shared)."""
    hops, ok = _chain(src, dirs, chains)
    try:
        if ok and hops:
            st = os.lstat(hops[-1])
            if not stat.S_ISLNK(st.st_mode):
                return hops[-1], st
        real = os.path.realpath(src, strict=True)
        return real, os.stat(real)
    except (OSError, ValueError):
        return None, None


def _placeholder(dom, why: object) -> Domain:
    """Keeps an unreadable domain visible (its uuid is known locally, no RPC), so
    nothing of it looks absent, while the planner leaves it alone."""
    LOG.warning("domain %s (%s) kept as unknown: %s", dom.name(), dom.UUIDString(), why)
    return Domain(uuid=dom.UUIDString().lower(), name=dom.name(), state=UNKNOWN_STATE,
                  nova_owned=False, nova_uuid=None)


class ParseCache:
    """Parsed domains keyed by their XML text, kept for one pass to the next.

    Parsing is a pure function of the XML text, and a host's domain XML rarely
    changes between two passes, so the long-running agent parses each version
    once. The key is the text itself, compared whole on a hit (a digest of each
    text cost ten times as much per pass as hashing and comparing the strings; the
    texts cost about 5 KB per domain). Entries not seen in a pass are dropped.
    """

    def __init__(self):
        self._entries: dict[str, Domain] = {}
        self._next: dict[str, Domain] = {}

    def parse(self, xml: str, state: str, name_re: re.Pattern | None) -> Domain:
        dom = self._entries.get(xml)
        if dom is None:
            dom = parse_domain_xml(xml, state, name_re)
        elif dom.state != state:
            dom = dataclasses.replace(dom, state=state)
        self._next[xml] = dom
        return dom

    def rotate(self) -> None:
        self._entries, self._next = self._next, {}


_DONE = object()


def _fetch_one(dom, code):
    """(domain, state code, its XML or the libvirtError the calls raised)."""
    try:
        if code is None:
            code = dom.state()[0]
        return dom, code, dom.XMLDesc(0)
    except libvirt.libvirtError as e:
        return dom, code, e


def _fetched(listed):
    """(domain, state code, its XML or the libvirtError that call raised) for each
    listed domain, in order; the ``state()`` and ``XMLDesc`` calls are made on a thread
    of their own, ahead of the caller, which parses and resolves one domain while
    libvirtd formats the next (that thread only waits: the GIL is released during each
    call). Any other exception ends the listing and is raised to the caller, as the
    same call made here would have been. Closing the generator early (the caller
    returns on a lost connection) stops the thread after its current call."""
    if len(listed) < 2:             # nothing to overlap: no thread
        for dom, code in listed:
            yield _fetch_one(dom, code)
        return
    q: queue.SimpleQueue = queue.SimpleQueue()
    stop = threading.Event()

    def fetch() -> None:
        try:
            for dom, code in listed:
                if stop.is_set():
                    return
                q.put(_fetch_one(dom, code))
        except BaseException as e:  # noqa: BLE001 - handed to the caller, raised there
            q.put(e)
        finally:
            q.put(_DONE)

    worker = threading.Thread(target=fetch, name="reaper-domain-xml", daemon=True)
    worker.start()
    try:
        while (item := q.get()) is not _DONE:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def collect_domains(conn, instance_name_template: str,
                    cache: ParseCache | None = None) -> CollectorResult:
    """Every domain on ``conn``, running or defined; never raises libvirtError."""
    name_re = template_regex(instance_name_template)
    parse = cache.parse if cache is not None else parse_domain_xml
    try:
        listed = _list_with_states(conn)
    except libvirt.libvirtError as e:
        return CollectorResult(kind="domain", ok=False, error=f"cannot list domains: {e}")
    items = []
    dirs: dict[str, str] = {}       # real paths of directories, for this pass only
    chains: dict = {}               # hops of each path, for this pass only
    # closed on every way out (a return on a lost connection too): its thread stops
    with contextlib.closing(_fetched(listed)) as fetched:
        for dom, code, xml in fetched:
            if isinstance(xml, libvirt.libvirtError):
                e = xml
                if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    continue        # gone since the listing: nothing left to see
                if e.get_error_code() in _CONNECTION_ERRORS \
                        or e.get_error_domain() == libvirt.VIR_FROM_RPC:
                    return CollectorResult(kind="domain", ok=False,
                                           error=f"libvirt connection failed: {e}")
                items.append(_placeholder(dom, e))
                continue
            try:
                parsed = parse(xml, STATE_NAMES.get(code, UNKNOWN_STATE), name_re)
            except Exception as e:  # noqa: BLE001 - hostile XML (MemoryError...) costs one domain
                items.append(_placeholder(dom, e))
                continue
            disks, changed = _resolved_disks(parsed.disks, dirs, chains)
            files = resolve_files(parsed.files, dirs, chains)
            if changed:
                parsed = dataclasses.replace(parsed, files=files, disks=disks)
            elif files != parsed.files:
                parsed = dataclasses.replace(parsed, files=files)
            items.append(parsed)
    if cache is not None:
        cache.rotate()
    return CollectorResult(kind="domain", ok=True, items=tuple(items))
