"""One notion of path: the file paths a domain uses (parsed, then resolved), the
resolved instance directories, hostile domain XML, a relative instances_path, and
the one-filesystem check after the rename."""
from __future__ import annotations

import logging
import os
import subprocess
import xml.etree.ElementTree as ET

import pytest

from reaper import exception
from reaper import config
from reaper.kinds.instance import files as file_steps
from reaper.kinds.instance import dirs as dir_inv
from reaper.kinds.instance import libvirt as libvirt_inv
from tests.unit.kinds.instance.test_inventory_libvirt import counting, domain_xml, write_node

U = "0c2d6a3e-1f9b-4d6e-8a41-5b7c9d0e1f21"
V = "1c2d6a3e-1f9b-4d6e-8a41-5b7c9d0e1f22"
IDIR = "/var/lib/nova/instances/" + U

EVERY_FILE_SOURCE = f"""<domain type='kvm'><name>vm</name><uuid>{U}</uuid>
  <title>/not/a/source</title><description>/neither</description>
  <metadata><x:app xmlns:x="http://example.com/x" path="/metadata/path">/meta</x:app></metadata>
  <os><type>hvm</type>
    <loader readonly='yes' type='pflash'>/usr/share/OVMF/OVMF_CODE.fd</loader>
    <nvram template='/usr/share/OVMF/OVMF_VARS.fd'>{IDIR}/nvram</nvram>
    <kernel>{IDIR}/kernel</kernel><initrd>{IDIR}/initrd</initrd><dtb>{IDIR}/dtb</dtb>
    <cmdline>root=/dev/vda console=ttyS0</cmdline>
  </os>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><source file='{IDIR}/disk'>
        <dataStore type='file'><format type='raw'/><source file='{IDIR}/data'/></dataStore>
      </source>
      <backingStore type='file'><format type='qcow2'/><source file='{IDIR}/base1'/>
        <backingStore type='file'><format type='raw'/><source file='{IDIR}/base2'/>
          <backingStore/></backingStore></backingStore>
      <mirror type='file' file='{IDIR}/mirror-old' format='raw' job='copy'>
        <format type='raw'/><source file='{IDIR}/mirror'/></mirror>
      <target dev='vda' bus='virtio'/></disk>
    <disk type='dir' device='disk'><source dir='{IDIR}/vvfat'/><target dev='vdb'/></disk>
    <disk type='network' device='disk'><source protocol='rbd' name='vms/{U}_disk'/>
      <target dev='vdc'/></disk>
    <filesystem type='mount'><source dir='{IDIR}/share'/><target dir='tag'/></filesystem>
    <serial type='pty'><log file='{IDIR}/console.log' append='off'/></serial>
    <console type='file'><source path='{IDIR}/console.txt'/></console>
    <channel type='unix'><source mode='bind' path='{IDIR}/qga.sock'/></channel>
    <memory model='nvdimm'><source><path>{IDIR}/nvdimm</path></source></memory>
  </devices>
  <qemu:commandline xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>
    <qemu:arg value='-drive'/><qemu:arg value='file={IDIR}/extra.img,if=virtio'/>
  </qemu:commandline>
</domain>"""


def test_every_file_source_is_recorded():
    dom = libvirt_inv.parse_domain_xml(EVERY_FILE_SOURCE, "running", None)
    files = set(dom.files)
    for name in ("nvram", "kernel", "initrd", "dtb", "disk", "data", "base1", "base2",
                 "mirror-old", "mirror", "vvfat", "share", "console.log", "console.txt",
                 "qga.sock", "nvdimm", "extra.img"):
        assert f"{IDIR}/{name}" in files, name
    assert "/usr/share/OVMF/OVMF_VARS.fd" in files
    # free text, identity and other programs' metadata are not sources
    assert not {"/not/a/source", "/neither", "/metadata/path", "/meta"} & files
    assert not any(f.startswith("vms/") or "rbd" in f for f in files)


def test_resolve_files_symlinks_and_spellings(tmp_path):
    real = tmp_path / "instances"
    (real / U).mkdir(parents=True)
    (real / U / "disk").write_bytes(b"x")
    (real / V).mkdir()
    (real / V / "base").write_bytes(b"x")
    os.symlink(real, tmp_path / "link")
    os.symlink(real / V / "base", real / U / "base-link")        # a symlinked file
    got = libvirt_inv.resolve_files([
        f"{tmp_path}/link/{U}/disk",            # through a symlinked directory
        f"{tmp_path}//instances/./{U}/disk",    # // and .
        f"{tmp_path}/instances/{V}/../{U}/disk",
        f"{real}/{U}/base-link",                # the link and its target both count
        "relative/path",                        # never a comparable path
        f"{real}/{U}/missing",                  # need not exist
    ])
    assert got == (f"{real}/{U}/disk", f"{real}/{U}/base-link", f"{real}/{V}/base",
                   f"{real}/{U}/missing")


def test_collector_records_resolved_files(tmp_path):
    real = tmp_path / "instances"
    (real / U).mkdir(parents=True)
    os.symlink(real, tmp_path / "link")
    uri = write_node(tmp_path, domain_xml(U, "vm", devices=(
        f"<disk type='file' device='disk'><source file='{tmp_path}/link/{U}/disk'/>"
        f"<target dev='vda'/></disk><serial type='pty'>"
        f"<log file='{tmp_path}//instances/{U}/console.log'/></serial>")))
    c = libvirt_inv.open_connection(uri)
    try:
        (dom,) = libvirt_inv.collect_domains(c, "instance-%08x").items
    finally:
        c.close()
    assert set(dom.files) == {f"{real}/{U}/disk", f"{real}/{U}/console.log"}
    # the disk record keeps libvirt's own spelling (the iSCSI rules match by-path names)
    assert dom.disks[0].source == f"{tmp_path}/link/{U}/disk"


@pytest.mark.parametrize("spelling", ["symlink", "double-slash", "dot-dot", "trailing-slash"])
def test_dir_collector_records_real_paths(tmp_path, spelling):
    real = tmp_path / "instances"
    (real / U).mkdir(parents=True)
    os.symlink(real, tmp_path / "link")
    configured = {"symlink": f"{tmp_path}/link", "double-slash": f"{tmp_path}//instances",
                  "dot-dot": f"{real}/../instances", "trailing-slash": f"{real}/"}[spelling]
    (d,) = dir_inv.collect_instance_dirs(configured).items
    assert d.path == f"{real}/{U}"


# --------------------------------------------------------------------------
# Hostile XML
# --------------------------------------------------------------------------

def _doc(body: str, dtd: str = "") -> str:
    return f"{dtd}<domain type='test'><name>vm</name><uuid>{U}</uuid>{body}</domain>"


INTERNAL_ENTITY = _doc("<devices><disk type='file'><source file='&p;'/></disk></devices>",
                       f"<!DOCTYPE domain [<!ENTITY p '{IDIR}/disk'>]>")
BILLION_LAUGHS = _doc("<description>&l9;</description>", "<!DOCTYPE domain [<!ENTITY l0 'lol'>"
                      + "".join(f"<!ENTITY l{i} '{f'&l{i - 1};' * 10}'>" for i in range(1, 10))
                      + "]>")
EXTERNAL_ENTITY = _doc("<description>&x;</description>",
                       "<!DOCTYPE domain [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>")
HUGE_ATTRIBUTE = _doc(f"<devices><disk type='file'><source file='/{'a' * 100_000}'/>"
                      f"</disk></devices>")


def test_elementtree_alone_would_expand_an_internal_entity():
    """The measurement behind the DTD refusal: expat expands internal entities (it
    only stops exponential growth and leaves external ones undefined)."""
    assert ET.fromstring(INTERNAL_ENTITY).find("devices/disk/source").get("file") == f"{IDIR}/disk"
    with pytest.raises(ET.ParseError):
        ET.fromstring(BILLION_LAUGHS)


@pytest.mark.parametrize("xml,why", [
    (INTERNAL_ENTITY, "DTD"), (BILLION_LAUGHS, "DTD"), (EXTERNAL_ENTITY, "DTD"),
    (HUGE_ATTRIBUTE, "attribute of 100001 characters"),
    (_doc(f"<description>{'d' * (libvirt_inv.MAX_XML_CHARS + 1)}</description>"), "characters"),
], ids=["internal-entity", "billion-laughs", "external-entity", "huge-attribute", "huge-xml"])
def test_hostile_xml_is_refused_by_the_parser(xml, why):
    with pytest.raises(ValueError, match=why):
        libvirt_inv.parse_domain_xml(xml, "running", None)


@pytest.mark.parametrize("xml", [INTERNAL_ENTITY, BILLION_LAUGHS, EXTERNAL_ENTITY,
                                 HUGE_ATTRIBUTE, "<domain><name>x</name>" * 1000],
                         ids=["internal-entity", "billion-laughs", "external-entity",
                              "huge-attribute", "garbage"])
def test_hostile_xml_makes_the_domain_unreadable_and_logged(tmp_path, caplog, xml):
    uri = write_node(tmp_path, domain_xml(U, "hostile"), domain_xml(V, "fine"))
    c = libvirt_inv.open_connection(uri)
    try:
        with caplog.at_level(logging.WARNING, logger="reaper.kinds.instance.libvirt"):
            res = libvirt_inv.collect_domains(
                counting(c, [], dom_overrides={"hostile": {"XMLDesc": lambda real, f: xml}}),
                "instance-%08x")
    finally:
        c.close()
    assert res.ok
    doms = {d.name: d for d in res.items}
    assert not doms["hostile"].readable and doms["hostile"].files == ()
    assert doms["fine"].readable
    assert "hostile" in caplog.text and "kept as unknown" in caplog.text


def test_any_parse_failure_costs_one_domain_only(tmp_path, monkeypatch):
    uri = write_node(tmp_path, domain_xml(U, "deep"), domain_xml(V, "fine"))

    def parse(xml, state, name_re):
        if "deep" in xml:
            raise RecursionError("maximum recursion depth exceeded")
        return real_parse(xml, state, name_re)
    real_parse = libvirt_inv.parse_domain_xml
    monkeypatch.setattr(libvirt_inv, "parse_domain_xml", parse)
    c = libvirt_inv.open_connection(uri)
    try:
        res = libvirt_inv.collect_domains(c, "instance-%08x")
    finally:
        c.close()
    assert res.ok and {d.name: d.readable for d in res.items} == {"deep": False, "fine": True}


# --------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------

@pytest.mark.parametrize("path,ok", [("/var/lib/nova/instances", True),
                                     ("/var/lib/nova//instances/", True),
                                     ("var/lib/nova/instances", False), ("", False),
                                     ("./instances", False)])
def test_instances_path_must_be_absolute(path, ok):
    if ok:
        config._check_instances_path(path)
    else:
        with pytest.raises(ValueError, match="instances_path must be an absolute path"):
            config._check_instances_path(path)


# --------------------------------------------------------------------------
# The one-filesystem check, again after the rename
# --------------------------------------------------------------------------

@pytest.fixture
def root_only():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")


def test_mount_appearing_after_the_rename_is_never_removed(tmp_path, monkeypatch, root_only):
    d = tmp_path / U
    (d / "mnt").mkdir(parents=True)
    (d / "disk").write_bytes(b"x")
    real_rename = os.rename
    mnt = tmp_path / f"{U}_del" / "mnt"

    def rename_then_mount(src, dst):
        real_rename(src, dst)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "fmpaths", str(mnt)],
                       check=True)
        (mnt / "precious").write_text("keep me")

    monkeypatch.setattr(file_steps.os, "rename", rename_then_mount)
    try:
        with pytest.raises(exception.UnsafePath, match="mounts inside"):
            file_steps.delete_instance_dir(str(d), str(tmp_path))
        assert (mnt / "precious").read_text() == "keep me"
    finally:
        subprocess.run(["umount", str(mnt)], check=False)
    # once unmounted, the next attempt finishes the removal from <uuid>_del
    monkeypatch.undo()
    assert str(file_steps.delete_instance_dir(str(d), str(tmp_path))) == f"removed {U}"
    assert os.listdir(tmp_path) == []


def test_relative_instances_path_is_a_clear_configuration_error(tmp_path):
    from tests.unit.test_cli import manage, write_conf
    conf = write_conf(tmp_path, "[DEFAULT]\ninstances_path = var/lib/nova/instances\n"
                                f"state_path = {tmp_path}\n[database]\nconnection = sqlite://\n")
    r = manage("audit", conf=conf)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "configuration error: [DEFAULT] instances_path must be an absolute path, not " \
           "'var/lib/nova/instances'" in r.stderr


def test_resolve_files_shares_directories_within_a_pass_never_across(tmp_path):
    """One memo per pass: a directory re-pointed between two passes is seen anew."""
    import os

    from reaper.kinds.instance import libvirt as libvirt_inv
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    link = tmp_path / "inst"
    link.symlink_to(a)
    memo: dict = {}
    first = libvirt_inv.resolve_files([f"{link}/x/disk", f"{link}/x/console.log"], memo)
    assert first == (f"{a}/x/disk", f"{a}/x/console.log")
    assert memo[f"{link}/x"] == f"{a}/x"
    os.unlink(link)
    link.symlink_to(b)
    # the next pass (a new memo) follows the new link
    assert libvirt_inv.resolve_files([f"{link}/x/disk"], {}) == (f"{b}/x/disk",)
    assert libvirt_inv.resolve_files([f"{link}/x/disk"]) == (f"{b}/x/disk",)


def test_directories_resolve_as_realpath_does_links_loops_and_dots_included(tmp_path):
    """The pass's directory memo builds each real path on its parent's: the same
    answer as os.path.realpath for every spelling, a symlink loop included (where
    realpath keeps the rest of the path as spelled), with one memo for all."""
    import itertools
    import random

    root = str(tmp_path)
    os.makedirs(f"{root}/a/b/c")
    os.makedirs(f"{root}/x/y")
    os.symlink(f"{root}/a", f"{root}/la")
    os.symlink("../x", f"{root}/a/lx")
    os.symlink("b/c", f"{root}/a/lc")
    os.symlink(f"{root}/loop", f"{root}/loop")
    os.symlink("nowhere", f"{root}/a/dangling")
    parts = ["a", "b", "c", "la", "lx", "lc", "x", "y", "..", ".", "", "missing",
             "dangling", "loop"]
    rnd = random.Random(13)
    paths = ["/".join((root, *p)) for p in itertools.product(parts, repeat=2)]
    paths += ["/".join((root, *(rnd.choice(parts) for _ in range(rnd.randint(3, 6)))))
              for _ in range(3000)]
    memo: dict = {}
    got = [(p, libvirt_inv._realdir(p, memo)) for p in paths]
    assert [g for g in got if g[1] != os.path.realpath(g[0])] == []
    assert [p for p in paths if libvirt_inv._realdir(p, {}) != os.path.realpath(p)] == []
