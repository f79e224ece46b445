"""The libvirt collector against libvirt's in-process test driver (test:///<node.xml>)."""
from __future__ import annotations

import libvirt
import pytest

from reaper.conf import CONF
from reaper.conf import libvirt as conf_libvirt
from reaper.kinds.instance import libvirt as libvirt_inv
from reaper.objects.host import DomainDisk, DomainInterface

TEST_NS = "http://libvirt.org/schemas/domain/test/1.0"
NOVA_1_1 = "http://openstack.org/xmlns/libvirt/nova/1.1"

# test driver run states (virDomainState)
RUNNING, BLOCKED, PAUSED, SHUTDOWN, SHUTOFF, CRASHED, PMSUSPENDED = 1, 2, 3, 4, 5, 6, 7

U_NOVA_RUN = "0c2d6a3e-1f9b-4d6e-8a41-5b7c9d0e1f21"
U_NOVA_PAUSED = "1c2d6a3e-1f9b-4d6e-8a41-5b7c9d0e1f22"
U_NOVA_OFF = "2c2d6a3e-1f9b-4d6e-8a41-5b7c9d0e1f23"
U_NAMED = "3c2d6a3e-1f9b-4d6e-8a41-5b7c9d0e1f24"
U_FOREIGN = "4c2d6a3e-1f9b-4d6e-8a41-5b7c9d0e1f25"
U_OTHER_META = "5c2d6a3e-1f9b-4d6e-8a41-5b7c9d0e1f26"
PORT_ID = "9a7b3c1d-2e4f-4a5b-8c6d-7e8f9a0b1c2d"


def nova_meta(ns: str = NOVA_1_1) -> str:
    return (f'<metadata><nova:instance xmlns:nova="{ns}"><nova:name>vm</nova:name>'
            f'<nova:package version="27.0.0"/></nova:instance></metadata>')


def domain_xml(uuid: str, name: str, *, state: int | None = None, meta: str = "",
               devices: str = "") -> str:
    runstate = f"<test:runstate>{state}</test:runstate>" if state is not None else ""
    return (f"<domain type='test'><name>{name}</name><uuid>{uuid}</uuid>{meta}"
            f"<memory>8192</memory><os><type>hvm</type></os>"
            f"<devices>{devices}</devices>{runstate}</domain>")


NOVA_DEVICES = f"""
  <disk type='file' device='disk'>
    <source file='/var/lib/nova/instances/{U_NOVA_RUN}/disk'/>
    <target dev='vda' bus='virtio'/>
  </disk>
  <disk type='block' device='disk'>
    <source dev='/dev/disk/by-path/ip-10.0.0.5:3260-iscsi-iqn.2010-10.org.openstack:volume-1-lun-1'/>
    <target dev='vdb' bus='virtio'/>
    <serial>6f1ae2b4-3c5d-4e6f-8a9b-0c1d2e3f4a5b</serial>
  </disk>
  <disk type='network' device='disk'>
    <source protocol='rbd' name='vms/{U_NOVA_RUN}_disk.eph0'>
      <host name='10.0.0.1' port='6789'/>
    </source>
    <target dev='vdc' bus='virtio'/>
  </disk>
  <disk type='file' device='cdrom'>
    <target dev='hda' bus='ide'/>
  </disk>
  <interface type='bridge'>
    <mac address='fa:16:3e:11:22:33'/>
    <source bridge='br-int'/>
    <virtualport type='openvswitch'>
      <parameters interfaceid='{PORT_ID}'/>
    </virtualport>
    <target dev='tap9a7b3c1d-2e'/>
  </interface>
  <interface type='ethernet'>
    <mac address='fa:16:3e:44:55:66'/>
    <target dev='tapdeadbeef-00'/>
  </interface>
"""


def write_node(tmp_path, *domains: str) -> str:
    node = tmp_path / "node.xml"
    node.write_text(f"<node xmlns:test='{TEST_NS}'>{''.join(domains)}</node>")
    return f"test://{node}"


@pytest.fixture
def conn(tmp_path):
    uri = write_node(
        tmp_path,
        domain_xml(U_NOVA_RUN, "instance-00000001", meta=nova_meta(), devices=NOVA_DEVICES),
        domain_xml(U_NOVA_PAUSED, "guest-paused", state=PAUSED,
                   meta=nova_meta("http://openstack.org/xmlns/libvirt/nova/1.0")),
        domain_xml(U_NOVA_OFF, "guest-off", state=SHUTOFF,
                   meta=nova_meta("http://openstack.org/xmlns/libvirt/nova/1.2")),
        domain_xml(U_NAMED, "instance-0000002a", state=SHUTOFF),
        domain_xml(U_FOREIGN, "ops-debug-vm", devices="""
            <interface type='bridge'><mac address='52:54:00:00:00:01'/>
              <source bridge='br0'/><target dev='tap-ops0'/></interface>"""),
        domain_xml(U_OTHER_META, "instance-2a", state=PAUSED,
                   meta='<metadata><x:app xmlns:x="http://example.com/openstack.org/xmlns/'
                        'libvirt/nova/1.1"/></metadata>'),
    )
    c = libvirt_inv.open_connection(uri)
    yield c
    try:
        c.close()
    except libvirt.libvirtError:
        pass            # the test closed it already


def by_name(result):
    return {d.name: d for d in result.items}


# --------------------------------------------------------------------------
# collect_domains
# --------------------------------------------------------------------------

def test_states_ownership_and_uuids(conn):
    res = libvirt_inv.collect_domains(conn, "instance-%08x")
    assert res.kind == "domain" and res.ok and res.error is None
    doms = by_name(res)
    assert {n: (d.state, d.nova_owned) for n, d in doms.items()} == {
        "instance-00000001": ("running", True),     # metadata 1.1 (and name)
        "guest-paused": ("paused", True),           # metadata 1.0
        "guest-off": ("shutoff", True),             # metadata 1.2
        "instance-0000002a": ("shutoff", True),     # name only
        "ops-debug-vm": ("running", False),         # neither
        "instance-2a": ("paused", False),           # look-alike name and namespace
    }
    for d in doms.values():
        assert d.nova_uuid == (d.uuid if d.nova_owned else None)
    assert doms["guest-paused"].uuid == U_NOVA_PAUSED
    assert doms["guest-off"].active is False and doms["guest-paused"].active is True


def test_disks_and_interfaces(conn):
    dom = by_name(libvirt_inv.collect_domains(conn, "instance-%08x"))["instance-00000001"]
    assert dom.disks == (
        DomainDisk(target="vda", device="disk", source_type="file",
                   source=f"/var/lib/nova/instances/{U_NOVA_RUN}/disk"),
        DomainDisk(target="vdb", device="disk", source_type="block",
                   source="/dev/disk/by-path/ip-10.0.0.5:3260-iscsi-"
                          "iqn.2010-10.org.openstack:volume-1-lun-1",
                   serial="6f1ae2b4-3c5d-4e6f-8a9b-0c1d2e3f4a5b"),
        DomainDisk(target="vdc", device="disk", source_type="network",
                   source=f"rbd:vms/{U_NOVA_RUN}_disk.eph0"),
        DomainDisk(target="hda", device="cdrom", source_type="file", source=None),
    )
    assert dom.interfaces == (
        DomainInterface(type="bridge", mac="fa:16:3e:11:22:33", target_dev="tap9a7b3c1d-2e",
                        source_bridge="br-int", interface_id=PORT_ID),
        DomainInterface(type="ethernet", mac="fa:16:3e:44:55:66",
                        target_dev="tapdeadbeef-00", source_bridge=None),
    )
    foreign = by_name(libvirt_inv.collect_domains(conn, "instance-%08x"))["ops-debug-vm"]
    assert foreign.interfaces == (DomainInterface("bridge", "52:54:00:00:00:01", "tap-ops0", "br0"),)


def test_other_states(tmp_path):
    states = {BLOCKED: "blocked", SHUTDOWN: "shutdown", CRASHED: "crashed",
              PMSUSPENDED: "pmsuspended", 0: "nostate"}
    uri = write_node(tmp_path, *(
        domain_xml(f"{code:08x}-0000-4000-8000-000000000000", f"vm{code}", state=code)
        for code in states))
    c = libvirt_inv.open_connection(uri)
    try:
        res = libvirt_inv.collect_domains(c, "instance-%08x")
    finally:
        c.close()
    assert {d.name: d.state for d in res.items} == {f"vm{k}": v for k, v in states.items()}


def test_template_with_uuid(tmp_path):
    uri = write_node(tmp_path, domain_xml(U_NAMED, U_NAMED),
                     domain_xml(U_FOREIGN, U_FOREIGN.upper()))
    c = libvirt_inv.open_connection(uri)
    try:
        doms = by_name(libvirt_inv.collect_domains(c, "%(uuid)s"))
    finally:
        c.close()
    assert doms[U_NAMED].nova_owned and doms[U_NAMED].nova_uuid == U_NAMED
    assert not doms[U_FOREIGN.upper()].nova_owned


def test_unusable_template_means_metadata_only(conn):
    doms = by_name(libvirt_inv.collect_domains(conn, "%(hostname)s"))
    assert not doms["instance-0000002a"].nova_owned
    assert doms["guest-paused"].nova_owned


def test_empty_host(tmp_path):
    c = libvirt_inv.open_connection(write_node(tmp_path))
    try:
        assert libvirt_inv.collect_domains(c, "instance-%08x") == \
            libvirt_inv.CollectorResult(kind="domain", ok=True, items=())
    finally:
        c.close()


def test_closed_connection_is_not_ok(conn):
    conn.close()
    res = libvirt_inv.collect_domains(conn, "instance-%08x")
    assert res.ok is False and res.items == () and "cannot list domains" in res.error


# --------------------------------------------------------------------------
# libvirt calls and races, through a counting proxy over the real test driver
# --------------------------------------------------------------------------

def lv_error(code: int, domain: int = libvirt.VIR_FROM_QEMU) -> libvirt.libvirtError:
    e = libvirt.libvirtError(f"simulated error {code}")
    e.err = (code, domain, f"simulated error {code}", 2, None, None, None, 0, 0)
    return e


class Proxy:
    """Forwards to a real libvirt object, counting calls and allowing overrides."""

    def __init__(self, target, calls: list, overrides=None):
        self._target, self._calls, self._overrides = target, calls, overrides or {}

    def __getattr__(self, attr):
        real = getattr(self._target, attr)

        def call(*args, **kw):
            self._calls.append(attr)
            if attr in self._overrides:
                return self._overrides[attr](real, *args, **kw)
            return real(*args, **kw)
        return call


def counting(conn, calls, conn_overrides=None, dom_overrides=None):
    """A conn proxy whose listed domains are proxies too; dom_overrides: name -> {attr: fn}."""
    dom_overrides = dom_overrides or {}

    def wrap(dom):
        return Proxy(dom, calls, dom_overrides.get(dom.name()))

    def stats(real, *a):
        return [(wrap(d), s) for d, s in real(*a)]

    def list_all(real, *a):
        return [wrap(d) for d in real(*a)]
    overrides = {"getAllDomainStats": stats, "listAllDomains": list_all,
                 **(conn_overrides or {})}
    return Proxy(conn, calls, overrides)


def test_one_bulk_call_plus_one_xmldesc_per_domain(conn):
    calls = []
    res = libvirt_inv.collect_domains(counting(conn, calls), "instance-%08x")
    assert res.ok and len(res.items) == 6
    assert calls.count("getAllDomainStats") == 1
    assert calls.count("XMLDesc") == 6
    assert len(calls) == 7, calls


def test_fallback_without_bulk_stats(conn):
    calls = []

    def unsupported(real, *a):
        raise lv_error(libvirt.VIR_ERR_NO_SUPPORT)
    res = libvirt_inv.collect_domains(
        counting(conn, calls, {"getAllDomainStats": unsupported}), "instance-%08x")
    assert res.ok
    assert by_name(res)["guest-paused"].state == "paused"
    assert by_name(res)["guest-off"].state == "shutoff"
    assert calls.count("listAllDomains") == 1 and calls.count("state") == 6


def test_listing_error_is_not_ok(conn):
    def broken(real, *a):
        raise lv_error(libvirt.VIR_ERR_OPERATION_TIMEOUT)
    res = libvirt_inv.collect_domains(counting(conn, [], {"getAllDomainStats": broken}),
                                      "instance-%08x")
    assert res == libvirt_inv.CollectorResult(
        kind="domain", ok=False, error="cannot list domains: simulated error 68")


def test_domain_gone_after_listing_is_skipped(conn):
    def undefine_first(real, *a):
        listed = real(*a)
        dom = conn.lookupByName("guest-off")   # inactive: undefine removes it
        dom.undefine()
        return listed
    res = libvirt_inv.collect_domains(
        counting(conn, [], {"getAllDomainStats": undefine_first}), "instance-%08x")
    assert res.ok
    assert "guest-off" not in by_name(res) and len(res.items) == 5


@pytest.mark.parametrize("xml", [
    "<domain><name>broken",                                     # not XML
    "<domain type='test'><name>guest-paused</name></domain>",   # no uuid
    "<domain type='test'><name>x</name><uuid>nope</uuid></domain>",
])
def test_unreadable_xml_is_kept_as_unknown_non_nova(conn, xml):
    res = libvirt_inv.collect_domains(
        counting(conn, [], dom_overrides={"guest-paused": {"XMLDesc": lambda real, f: xml}}),
        "instance-%08x")
    assert res.ok and len(res.items) == 6
    dom = by_name(res)["guest-paused"]
    assert (dom.uuid, dom.state, dom.nova_owned, dom.nova_uuid) == \
        (U_NOVA_PAUSED, "unknown", False, None)
    assert dom.active        # unknown counts as in use


def test_other_per_domain_error_is_kept_as_unknown(conn):
    def fails(real, flags):
        raise lv_error(libvirt.VIR_ERR_INTERNAL_ERROR)
    res = libvirt_inv.collect_domains(
        counting(conn, [], dom_overrides={"guest-off": {"XMLDesc": fails}}), "instance-%08x")
    assert res.ok and by_name(res)["guest-off"].state == "unknown"
    assert not by_name(res)["guest-off"].nova_owned


@pytest.mark.parametrize("code,domain", [
    (libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_FROM_NONE),
    (libvirt.VIR_ERR_SYSTEM_ERROR, libvirt.VIR_FROM_RPC),
    (libvirt.VIR_ERR_INTERNAL_ERROR, libvirt.VIR_FROM_RPC),   # "client socket is closed"
])
def test_connection_lost_mid_way_is_not_ok(conn, code, domain):
    def fails(real, flags):
        raise lv_error(code, domain)
    res = libvirt_inv.collect_domains(
        counting(conn, [], dom_overrides={"guest-off": {"XMLDesc": fails}}), "instance-%08x")
    assert res.ok is False and res.items == () and "connection" in res.error


def _xml_threads_alive() -> list:
    import threading
    return [t for t in threading.enumerate() if t.name == "reaper-domain-xml"]


def test_xml_is_fetched_on_a_thread_of_its_own_and_it_ends_with_the_collection(conn):
    """XMLDesc runs ahead of the parsing on a thread of its own; once the collector
    returns (here, on a connection lost at the 2nd domain) that thread has ended and
    makes no more calls."""
    import threading
    seen, calls = [], []

    def where(real, flags):
        seen.append(threading.current_thread())
        return real(flags)

    def lost(real, flags):
        seen.append(threading.current_thread())
        raise lv_error(libvirt.VIR_ERR_INVALID_CONN, libvirt.VIR_FROM_NONE)
    names = sorted(d.name() for d in conn.listAllDomains(0))
    overrides = {n: {"XMLDesc": where} for n in names}
    res = libvirt_inv.collect_domains(counting(conn, calls, dom_overrides=overrides),
                                      "instance-%08x")
    assert res.ok and len(seen) == 6
    assert all(t is not threading.current_thread() for t in seen)
    assert not _xml_threads_alive()

    order = [d.name() for d, _ in conn.getAllDomainStats(libvirt.VIR_DOMAIN_STATS_STATE, 0)]
    overrides[order[1]] = {"XMLDesc": lost}
    calls.clear()
    res = libvirt_inv.collect_domains(counting(conn, calls, dom_overrides=overrides),
                                      "instance-%08x")
    assert res.ok is False and "connection" in res.error
    assert not _xml_threads_alive()
    made = len(calls)
    import time
    time.sleep(0.05)
    assert len(calls) == made       # nothing after the return


def test_an_unexpected_error_of_the_xml_thread_is_raised_to_the_caller(conn):
    """Not a libvirtError: raised by collect_domains as the same call made on the
    caller's thread would be (the kinds manager then marks the kind failed), never
    lost with the thread nor a hang."""
    def odd(real, flags):
        raise RuntimeError("binding bug")
    with pytest.raises(RuntimeError, match="binding bug"):
        libvirt_inv.collect_domains(
            counting(conn, [], dom_overrides={"guest-off": {"XMLDesc": odd}}),
            "instance-%08x")
    assert not _xml_threads_alive()


# --------------------------------------------------------------------------
# instance_name_template -> regex
# --------------------------------------------------------------------------

@pytest.mark.parametrize("template,matches,rejects", [
    ("instance-%08x", ["instance-00000001", "instance-0000002a", "instance-123456789"],
     ["instance-1", "instance-0000002A", "instance-000000001", "xinstance-00000001",
      "instance-00000001x", "instance-0000000g"]),
    ("instance-%x", ["instance-0", "instance-2a"], ["instance-02a", "instance-"]),
    ("vm-%d", ["vm-42"], ["vm-042", "vm-4a"]),
    ("vm-%06d", ["vm-000042", "vm-1234567"], ["vm-42", "vm-0000042"]),
    ("%(uuid)s", [U_NAMED], [U_NAMED.upper(), U_NAMED + "_resize"]),
    ("inst-%(id)08x", ["inst-0000002a"], ["inst-2a"]),
    ("%(uuid)s-%(id)d", [U_NAMED + "-7"], [U_NAMED]),
    ("100%%-%x", ["100%-ff"], ["100%%-ff"]),
    ("a.b-%x", ["a.b-1"], ["axb-1"]),
])
def test_template_regex(template, matches, rejects):
    rx = libvirt_inv.template_regex(template)
    assert rx is not None
    for name in matches:
        assert rx.fullmatch(name), name
    for name in rejects:
        assert not rx.fullmatch(name), name


@pytest.mark.parametrize("template", [
    "%(hostname)s", "%(display_name)s-%(id)d", "fixed-name", "%x-%x", "%(id)d-%x",
    "a%-8x", "%.8x", "%8d", "%08s", "%(uuid)x", "trailing%", "a%!b", "%e",
])
def test_template_regex_unusable(template):
    assert libvirt_inv.template_regex(template) is None


# --------------------------------------------------------------------------
# connection and options
# --------------------------------------------------------------------------

def test_open_connection_silences_libvirt_errors(capfd):
    c = libvirt_inv.open_connection("test:///default")
    try:
        with pytest.raises(libvirt.libvirtError):
            c.lookupByName("no-such-domain")
    finally:
        c.close()
    assert capfd.readouterr().err == ""


def test_connection_uri_option():
    assert CONF.libvirt.connection_uri == "qemu:///system"
    assert [o.name for o in conf_libvirt.libvirt_opts] == ["connection_uri"]


def test_parse_cache_reuses_parsed_domains_and_forgets_vanished_ones():
    from reaper.kinds.instance.libvirt import ParseCache, parse_domain_xml
    xml = ("<domain type='kvm'><name>instance-00000001</name>"
           "<uuid>11111111-2222-3333-4444-555555555555</uuid><devices/></domain>")
    cache = ParseCache()
    a = cache.parse(xml, "running", None)
    cache.rotate()
    b = cache.parse(xml, "running", None)
    assert b is a and b == parse_domain_xml(xml, "running", None)
    c = cache.parse(xml, "paused", None)
    assert c.state == "paused" and c.uuid == a.uuid
    cache.rotate()
    cache.rotate()          # a pass without that domain
    assert cache.parse(xml, "running", None) is not a


def test_block_sources_and_symlinks_are_resolved_anew_each_pass_with_the_cache(tmp_path):
    """Two domains name the same block source link and file link: within a pass
    both get its current target (the pass resolves each path once); re-pointed
    between two passes over unchanged (cached) XML, the next pass sees the new
    target in the disks and the files."""
    link, flink = tmp_path / "by-path-lun-1", tmp_path / "disk.link"
    a, b = tmp_path / "a.img", tmp_path / "b.img"
    a.write_bytes(b"")
    b.write_bytes(b"")
    link.symlink_to("/dev/null")
    flink.symlink_to(a)
    devices = (f"<disk type='block' device='disk'><source dev='{link}'/>"
               f"<target dev='vdb'/></disk><disk type='file' device='disk'>"
               f"<source file='{flink}'/><target dev='vda'/></disk>")
    uri = write_node(tmp_path, domain_xml(U_NOVA_RUN, "instance-00000001", devices=devices),
                     domain_xml(U_NAMED, "instance-0000002a", devices=devices))
    c = libvirt_inv.open_connection(uri)
    cache = libvirt_inv.ParseCache()
    try:
        def seen():
            res = libvirt_inv.collect_domains(c, "instance-%08x", cache)
            assert res.ok and len(res.items) == 2
            return [(sorted((d.target, d.resolved, d.devt) for d in dom.disks), dom.files)
                    for dom in res.items]
        first = seen()
        assert first[0] == first[1]
        assert first[0][0] == [("vda", None, None), ("vdb", "null", None)]
        assert "/dev/null" in first[0][1] and str(a) in first[0][1]
        link.unlink()
        link.symlink_to("/dev/zero")
        flink.unlink()
        flink.symlink_to(b)
        second = seen()
        assert second[0] == second[1]
        assert second[0][0] == [("vda", None, None), ("vdb", "zero", None)]
        assert "/dev/zero" in second[0][1] and "/dev/null" not in second[0][1]
        assert str(b) in second[0][1] and str(a) not in second[0][1]
    finally:
        c.close()


def test_a_block_source_whose_link_cannot_be_followed_is_not_resolved(tmp_path):
    """A dangling link and a link loop: the source stays unresolved (as realpath
    with strict=True would have it), and its spelling stays among the files."""
    gone, loop = tmp_path / "gone", tmp_path / "loop"
    gone.symlink_to(tmp_path / "nowhere")
    loop.symlink_to(loop)
    devices = "".join(f"<disk type='block' device='disk'><source dev='{p}'/>"
                      f"<target dev='vd{t}'/></disk>" for p, t in ((gone, "b"), (loop, "c")))
    uri = write_node(tmp_path, domain_xml(U_NOVA_RUN, "instance-00000001", devices=devices))
    c = libvirt_inv.open_connection(uri)
    try:
        res = libvirt_inv.collect_domains(c, "instance-%08x")
        (dom,) = res.items
        assert [(d.resolved, d.devt) for d in dom.disks] == [(None, None), (None, None)]
        assert str(gone) in dom.files and str(loop) in dom.files
    finally:
        c.close()
