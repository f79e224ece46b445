"""Instance file removal: rename to _del, remove, and the safety checks around it."""
from __future__ import annotations

import os

import pytest

from reaper import exception
from reaper.kinds.instance import files
from reaper.objects.step import StepOutcome, StepResult

U = "11111111-2222-3333-4444-555555555555"


def make(root, name, files_=("disk",)):
    d = root / name
    d.mkdir()
    for f in files_:
        (d / f).write_bytes(b"x" * 10)
    return d


def test_removes_via_del_and_is_idempotent(tmp_path):
    make(tmp_path, U)
    assert files.delete_instance_dir(str(tmp_path / U), str(tmp_path)) == \
        StepResult(StepOutcome.DONE, f"removed {U}")
    assert os.listdir(tmp_path) == []
    res = files.delete_instance_dir(str(tmp_path / U), str(tmp_path))
    assert (res.outcome, str(res)) == (StepOutcome.ABSENT, "already gone")


def test_resumes_after_crash_between_rename_and_remove(tmp_path):
    make(tmp_path, U + "_del")          # the rename happened, the rmtree did not
    assert str(files.delete_instance_dir(str(tmp_path / U), str(tmp_path))) == f"removed {U}"
    assert os.listdir(tmp_path) == []


def test_stale_del_is_cleared_before_rename(tmp_path):
    make(tmp_path, U + "_del")
    make(tmp_path, U + "_resize")
    files.delete_instance_dir(str(tmp_path / (U + "_resize")), str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_never_follows_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "precious").write_text("keep me")
    root = tmp_path / "instances"
    root.mkdir()
    d = make(root, U)
    os.symlink(outside, d / "link-to-outside")
    files.delete_instance_dir(str(d), str(root))
    assert (outside / "precious").read_text() == "keep me"
    # the instance dir itself being a symlink is refused
    os.symlink(outside, root / U)
    with pytest.raises(exception.UnsafePath):
        files.delete_instance_dir(str(root / U), str(root))
    assert (outside / "precious").exists()


def test_refuses_paths_outside_instances_path(tmp_path):
    root = tmp_path / "instances"
    root.mkdir()
    elsewhere = make(tmp_path, U)
    with pytest.raises(exception.UnsafePath):
        files.delete_instance_dir(str(elsewhere), str(root))
    nested = make(make(root, "sub", ()), U)
    with pytest.raises(exception.UnsafePath):
        files.delete_instance_dir(str(nested), str(root))
    assert elsewhere.exists() and nested.exists()
