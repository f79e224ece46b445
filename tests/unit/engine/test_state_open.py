"""Opening the state DB for a pass: whole and writable, or one clear error."""
from __future__ import annotations

import datetime
import os
import sqlite3

import pytest

from reaper import exception
from reaper import state as state_mod


def _db(tmp_path) -> str:
    return str(tmp_path / "reaper-state.sqlite")


def test_a_missing_state_db_is_created(tmp_path):
    st = state_mod.open_checked(str(tmp_path / "new"))
    assert st.backlog() == 0
    st.close()


def test_a_file_that_is_not_a_database_is_damaged(tmp_path):
    with open(_db(tmp_path), "wb") as f:
        f.write(os.urandom(8192))
    with pytest.raises(exception.StateDBError) as e:
        state_mod.open_checked(str(tmp_path))
    msg = str(e.value)
    assert _db(tmp_path) in msg and "damaged" in msg and "aside" in msg
    assert "\n" not in msg


def test_a_damaged_page_is_found_at_open(tmp_path):
    st = state_mod.StateDB(str(tmp_path))
    st._db.execute("BEGIN")
    st._db.executemany("INSERT INTO observations VALUES (?, 'orphan_dir', 't', 't', 1)",
                       [(f"instance_dir:/i/{n:05d}",) for n in range(2000)])
    st._db.execute("COMMIT")
    st.close()
    c = sqlite3.connect(_db(tmp_path))
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()
    with open(_db(tmp_path), "r+b") as f:
        f.seek(8 * 4096)                    # a page of the observations table
        f.write(os.urandom(4096))
    with pytest.raises(exception.StateDBError) as e:
        state_mod.open_checked(str(tmp_path))
    assert "damaged" in str(e.value) and "\n" not in str(e.value)


def test_a_read_only_state_db_is_not_writable(tmp_path, monkeypatch):
    state_mod.StateDB(str(tmp_path)).close()
    real = sqlite3.connect

    def read_only(path, *a, **kw):     # root ignores mode bits: open it read-only instead
        return real(f"file:{path}?mode=ro", *a, uri=True, **kw)

    monkeypatch.setattr(state_mod.sqlite3, "connect", read_only)
    with pytest.raises(exception.StateDBError) as e:
        state_mod.open_checked(str(tmp_path))
    assert "not writable" in str(e.value) and _db(tmp_path) in str(e.value)


def test_a_state_db_locked_by_another_process_is_not_damage(tmp_path):
    """Another process's write lock passes by itself: the DB opens (the pass trips its
    state_unavailable guard later), it is not refused as damaged or read-only."""
    state_mod.StateDB(str(tmp_path)).close()
    holder = sqlite3.connect(_db(tmp_path), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        st = state_mod.open_checked(str(tmp_path), busy_timeout=0.2)
        with pytest.raises(state_mod.StateError):
            st.set_flag("x", "y", datetime.datetime(2026, 1, 1))
        st.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
