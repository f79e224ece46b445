"""The instance directory collector and the filesystem-type lookup."""
from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from reaper.kinds.instance import dirs as dir_inv
from reaper.objects.fields import DirKind

U1 = "0c2d6a3e-1f9b-4d6e-8a41-5b7c9d0e1f21"
U2 = "1c2d6a3e-1f9b-4d6e-8a41-5b7c9d0e1f22"
U3 = "2c2d6a3e-1f9b-4d6e-8a41-5b7c9d0e1f23"
U4 = "3c2d6a3e-1f9b-4d6e-8a41-5b7c9d0e1f24"
DISK = 64 * 1024            # InstancesPath.DISK_SIZE


def dir_size(path) -> int:
    """What the fixture's make_dir writes: disk + disk.info (+ extra files)."""
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def collect(ip):
    res = dir_inv.collect_instance_dirs(str(ip), sizes=True)
    assert res.kind == "instance_dir"
    return res


def test_every_pattern(instances_path):
    d1 = instances_path.instance(U1, age=3600)
    d2 = instances_path.resize(U2)
    d3 = instances_path.deleting(U3)
    res = collect(instances_path)
    assert res.ok and res.error is None
    got = {d.name: d for d in res.items}
    assert set(got) == {U1, f"{U2}_resize", f"{U3}_del"}
    assert (got[U1].uuid, got[U1].kind, got[U1].path) == (U1, DirKind.INSTANCE, str(d1))
    assert (got[f"{U2}_resize"].uuid, got[f"{U2}_resize"].kind) == (U2, DirKind.RESIZE)
    assert (got[f"{U3}_del"].uuid, got[f"{U3}_del"].kind) == (U3, DirKind.DELETING)
    assert got[U1].size_bytes == dir_size(d1) and got[U1].size_bytes > DISK
    assert got[U1].mtime == os.stat(d1).st_mtime
    assert got[f"{U2}_resize"].path == str(d2) and got[f"{U3}_del"].path == str(d3)


def test_same_uuid_in_several_forms(instances_path):
    instances_path.instance(U1)
    instances_path.resize(U1)
    res = collect(instances_path)
    assert sorted((d.uuid, d.kind) for d in res.items) == [
        (U1, DirKind.INSTANCE), (U1, DirKind.RESIZE)]


def test_look_alikes_are_never_listed(instances_path, tmp_path):
    for name in (f"{U1}_resize_old", f"{U1}_del_", f"{U1}_DEL", f"{U1}.bak", U2.upper(),
                 U2.replace("-", ""), "{" + U2 + "}", f"x{U2}", U2[:-1], "_base", "locks",
                 "snapshots", "compute_nodes_dir"):
        instances_path.make_dir(name)
    (instances_path / "compute_nodes").write_text("{}")
    (instances_path / U3).write_text("a file named like a uuid")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "disk").write_bytes(b"x" * 100)
    os.symlink(outside, instances_path / U4)                 # symlink to a dir
    os.symlink(outside, instances_path / f"{U4}_resize")
    os.symlink(instances_path / "nowhere", instances_path / f"{U4}_del")   # dangling
    res = collect(instances_path)
    assert res.ok and res.items == ()


def test_empty_instances_path_is_ok(instances_path):
    assert collect(instances_path) == dir_inv.CollectorResult(kind="instance_dir", ok=True)


def test_missing_instances_path_is_not_ok(tmp_path):
    res = dir_inv.collect_instance_dirs(str(tmp_path / "unmounted"))
    assert res.ok is False and res.items == ()
    assert "does not exist" in res.error and "unmounted" in res.error


def test_instances_path_not_a_directory(tmp_path):
    f = tmp_path / "file"
    f.write_text("")
    res = dir_inv.collect_instance_dirs(str(f), sizes=True)
    assert res.ok is False and "cannot list" in res.error


def test_unreadable_instances_path_is_not_ok(instances_path, monkeypatch):
    real = os.scandir

    def scandir(path):
        if os.fspath(path) == str(instances_path):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(dir_inv.os, "scandir", scandir)
    res = collect(instances_path)
    assert res.ok is False and "Permission denied" in res.error


def test_size_does_not_follow_symlinks(instances_path, tmp_path):
    d = instances_path.instance(U1, disk_size=1000)
    base = dir_size(d)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 50_000)
    bigdir = tmp_path / "bigdir"
    bigdir.mkdir()
    (bigdir / "f").write_bytes(b"x" * 70_000)
    os.symlink(big, d / "disk.link")                    # Nova's image-backend links
    os.symlink(bigdir, d / "dir.link")
    sub = d / "console"
    sub.mkdir()
    (sub / "console.log").write_bytes(b"y" * 300)
    os.link(d / "disk", d / "disk.hardlink")            # counted once
    (sub / ".hidden").write_bytes(b"z" * 7)
    [item] = collect(instances_path).items
    assert item.size_bytes == base + 300 + 7


def test_permission_error_inside_a_dir_is_partial_not_fatal(instances_path, monkeypatch):
    d1 = instances_path.instance(U1, disk_size=1000)
    readable = dir_size(d1)
    locked = d1 / "locked"
    locked.mkdir()
    (locked / "f").write_bytes(b"x" * 5000)
    d2 = instances_path.instance(U2, disk_size=2000)
    real = os.scandir

    def scandir(path):
        if os.fspath(path) in (str(locked), str(d2)):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)
    monkeypatch.setattr(dir_inv.os, "scandir", scandir)
    res = collect(instances_path)
    assert res.ok
    got = {d.uuid: d.size_bytes for d in res.items}
    assert got == {U1: readable, U2: 0}          # both listed: they exist


def test_size_stays_on_one_filesystem(instances_path):
    d = instances_path.instance(U1, disk_size=1000)
    base = dir_size(d)
    mnt = d / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("needs root to mount a tmpfs")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "reaper-test", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.strip()}")
    try:
        (mnt / "other-fs").write_bytes(b"x" * 4096)
        [item] = collect(instances_path).items
        assert item.size_bytes == base
        assert dir_inv.filesystem_type(str(mnt)) == "tmpfs"
        assert dir_inv.filesystem_type(str(mnt / "other-fs")) == "tmpfs"
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


# --------------------------------------------------------------------------
# filesystem_type
# --------------------------------------------------------------------------

def write_mounts(tmp_path, *lines: str) -> str:
    f = tmp_path / "mounts"
    f.write_text("".join(line + "\n" for line in lines))
    return str(f)


def test_filesystem_type_longest_prefix(tmp_path):
    inst = tmp_path / "nova" / "instances"
    inst.mkdir(parents=True)
    (tmp_path / "nova" / "instances-local").mkdir()
    mounts = write_mounts(
        tmp_path,
        "overlay / overlay rw,relatime 0 0",
        f"/dev/sda1 {tmp_path} ext4 rw 0 0",
        f"nfs.example:/export {inst} nfs4 rw,vers=4.2 0 0",
        "proc /proc proc rw 0 0",
    )
    assert dir_inv.filesystem_type(str(inst), mounts) == "nfs4"
    assert dir_inv.filesystem_type(str(inst / U1 / "disk"), mounts) == "nfs4"
    assert dir_inv.filesystem_type(str(inst) + "/", mounts) == "nfs4"
    # a sibling sharing the prefix as a string is not inside the mount
    assert dir_inv.filesystem_type(str(tmp_path / "nova" / "instances-local"), mounts) == "ext4"
    assert dir_inv.filesystem_type("/etc", mounts) == "overlay"


def test_filesystem_type_resolves_symlinks(tmp_path):
    real = tmp_path / "srv" / "instances"
    real.mkdir(parents=True)
    link = tmp_path / "instances"
    os.symlink(real, link)
    mounts = write_mounts(tmp_path, "overlay / overlay rw 0 0",
                          f"server:/vol {tmp_path / 'srv'} glusterfs rw 0 0")
    assert dir_inv.filesystem_type(str(link), mounts) == "glusterfs"


def test_filesystem_type_stacked_mounts_last_wins(tmp_path):
    inst = tmp_path / "instances"
    mounts = write_mounts(tmp_path, "overlay / overlay rw 0 0",
                          f"systemd-1 {inst} autofs rw 0 0",
                          f"nfs:/x {inst} nfs rw 0 0")
    assert dir_inv.filesystem_type(str(inst), mounts) == "nfs"


def test_filesystem_type_escaped_mount_point(tmp_path):
    inst = tmp_path / "my instances"
    inst.mkdir()
    escaped = str(inst).replace(" ", "\\040")
    mounts = write_mounts(tmp_path, "overlay / overlay rw 0 0",
                          f"//srv/share {escaped} cifs rw 0 0")
    assert dir_inv.filesystem_type(str(inst), mounts) == "cifs"


def test_filesystem_type_unknown(tmp_path):
    assert dir_inv.filesystem_type("/x", write_mounts(tmp_path, "tmpfs /run tmpfs rw 0 0")) \
        is None
    assert dir_inv.filesystem_type("/x", str(tmp_path / "no-such-mounts")) is None


def test_filesystem_type_real_mount_table(tmp_path):
    fs = dir_inv.filesystem_type(str(tmp_path))
    assert fs
    if shutil.which("findmnt"):
        out = subprocess.run(["findmnt", "-n", "-o", "FSTYPE", "-T", str(tmp_path)],
                             capture_output=True, text=True, check=True).stdout.strip()
        assert fs == out


def test_fs_type_sets():
    assert not dir_inv.SHARED_FS_TYPES & dir_inv.LOCAL_FS_TYPES
    assert {"nfs", "nfs4", "cifs", "glusterfs", "cephfs", "ocfs2", "gfs2", "lustre", "gpfs"} \
        <= dir_inv.SHARED_FS_TYPES
    assert {"ext4", "xfs", "btrfs", "tmpfs", "zfs", "overlay"} <= dir_inv.LOCAL_FS_TYPES
    for unsure in ("virtiofs", "9p", "fuseblk", "autofs"):
        assert unsure not in dir_inv.SHARED_FS_TYPES | dir_inv.LOCAL_FS_TYPES


def test_sizes_are_measured_only_on_request(instances_path):
    d1 = instances_path.instance(U1)
    (item,) = dir_inv.collect_instance_dirs(str(instances_path)).items
    assert item.size_bytes is None
    assert dir_inv.tree_size(str(d1)) == dir_size(d1)
    assert dir_inv.tree_size(str(instances_path / "gone")) is None
