"""The least-privilege Nova DB grants (reaper.nova.grants): the statements, where they
are published (tools/nova-db-grants.sql, doc/install.md), SHOW GRANTS parsing and
[database] read_only's decision. The grants are proven sufficient on MariaDB by
tests/functional/test_nova_db_grants.py."""
from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import types

import pytest
import sqlalchemy as sa

from reaper.nova import grants
from reaper.nova import schema as s
from reaper.nova import columns as nova_columns
REPO = pathlib.Path(__file__).resolve().parents[3]


def manage(*args, conf=None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "reaper.cmd.manage"]
    if conf:
        cmd += ["--config-file", str(conf)]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=str(REPO)))


# --------------------------------------------------------------------------
# the statements
# --------------------------------------------------------------------------

def test_the_script_in_tools_is_the_generators_output():
    assert (REPO / "tools/nova-db-grants.sql").read_text() == grants.render(reclaim=True), (
        "tools/nova-db-grants.sql is out of date: reaper-manage db-grants --reclaim "
        "> tools/nova-db-grants.sql")


def test_the_install_doc_shows_the_generators_output():
    text = (REPO / "doc/install.md").read_text()
    blocks = re.findall(r"```sql\n(.*?)```", text, re.S)
    assert grants.render(host="cmp-17.example.org", reclaim=True) in blocks


def test_no_database_wide_grant_and_no_write_in_the_read_part():
    sql = grants.render(reclaim=True, ctl=True)
    assert "`nova`.*" not in sql and "*.*" not in sql and "ALL" not in sql
    read = grants.render()
    assert not re.search(r"\b(UPDATE|INSERT|DELETE)\b", read.split("-- Read-only")[1])
    for g in grants.READ:
        assert (g.update, g.insert, g.delete) == ((), (), False)


def test_the_grants_follow_the_columns_the_code_reads_and_the_tables_finalize_touches():
    read = {g.table: g for g in grants.READ}
    assert read["instances"].select == nova_columns.INSTANCE_COLS
    assert read["shadow_instances"].select == nova_columns.INSTANCE_COLS
    assert read["migrations"].select == nova_columns.MIGRATION_COLS
    assert set(nova_columns.BDM_COLS) < set(read["block_device_mapping"].select)
    held = set(grants.needs(grants.READ + grants.RECLAIM))
    for table, col in s.DEPENDENT_TABLES:
        for c in ("id", col, "deleted"):
            assert ("SELECT", table.name, c) in held
        for c in ("deleted", "deleted_at"):
            assert ("UPDATE", table.name, c) in held
    # Every column named exists in the schema slice (itself Nova's names).
    for g in grants.READ + grants.RECLAIM + grants.NOTIFY + grants.CTL:
        cols = set(s.metadata.tables[g.table].c.keys())
        assert set(g.select + g.update + g.insert) <= cols, g.table
    # DELETE only where the marker is removed and where instance_destroy deletes
    # (tables without a deleted column), with SELECT of the column naming the instance.
    assert [g.table for g in grants.RECLAIM + grants.READ if g.delete] == [
        "instance_system_metadata", "tags", "console_auth_tokens"]
    for table, col in s.HARD_DELETED_TABLES:
        assert ("SELECT", table.name, col) in held and ("DELETE", table.name, None) in held
    # finalize's other writes: cleaned, the emptied info cache.
    assert ("UPDATE", "instances", "cleaned") in held
    for c in ("network_info", "updated_at"):
        assert ("UPDATE", "instance_info_caches", c) in held


def test_names_that_cannot_go_into_the_script_are_refused():
    for bad in ("a\nDROP DATABASE nova; --", "x\\y", "", "t\tab"):
        with pytest.raises(ValueError):
            grants.render(host=bad)
    sql = grants.render(user="o'brien", host="10.0.%", database="nova`cell1")
    assert "'o''brien'@'10.0.%'" in sql and "`nova``cell1`.`instances`" in sql


def test_the_command_prints_the_script_and_takes_names_from_the_configuration(tmp_path):
    r = manage("db-grants", "--reclaim")
    assert r.returncode == 0 and r.stdout == grants.render(reclaim=True), r.stderr
    conf = tmp_path / "reaper.conf"
    conf.write_text("[database]\nconnection = mysql+pymysql://cmp17:pw@db/nova_cell1\n")
    r = manage("db-grants", "--host", "cmp-17", "--ctl", conf=conf)
    assert r.returncode == 0, r.stderr
    assert r.stdout == grants.render("cmp17", "cmp-17", "nova_cell1", ctl=True)
    assert "pw" not in r.stdout.replace("password", "")
    r = manage("db-grants", "--host", "a\nb")
    assert r.returncode == 1 and "control character" in r.stderr
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------
# SHOW GRANTS
# --------------------------------------------------------------------------

MARIADB_READ = [
    "GRANT USAGE ON *.* TO `reaper`@`%` IDENTIFIED BY PASSWORD '*9B5B60722C664FD3A8C916F70607CF484C356FEC'",
    *[line.rstrip(";").replace("'reaper'@'%'", "`reaper`@`%`")
      for line in grants.render().splitlines() if line.startswith("GRANT")],
]


def parsed(lines):
    return [g for g in map(grants.parse_grant, lines) if g is not None]


def test_parse_column_table_database_and_global_grants():
    g = grants.parse_grant("GRANT SELECT (`key`, `id`), INSERT (`value`), DELETE ON "
                           "`nova`.`instance_system_metadata` TO `r`@`%`")
    assert (g.database, g.table, g.privileges) == ("nova", "instance_system_metadata",
                                                   frozenset({"DELETE"}))
    assert g.column_privs("SELECT") == {"key", "id"} and g.column_privs("INSERT") == {"value"}
    g = grants.parse_grant("GRANT ALL PRIVILEGES ON *.* TO `reaper`@`localhost` "
                           "IDENTIFIED BY PASSWORD '*9B5B' WITH GRANT OPTION")
    assert (g.database, g.table, g.privileges) == ("*", "*", frozenset({"ALL PRIVILEGES"}))
    g = grants.parse_grant("GRANT SELECT, UPDATE ON `nova\\_cell%`.* TO 'r'@'h'")
    assert (g.database, g.table, g.privileges) == ("nova\\_cell%", "*",
                                                   frozenset({"SELECT", "UPDATE"}))
    # MySQL 8 spelling, a column named like a keyword
    g = grants.parse_grant("GRANT SELECT (`on`, `to`) ON `nova`.`t` TO `r`@`%`")
    assert g.column_privs("SELECT") == {"on", "to"} and g.table == "t"
    for nothing in ("GRANT `reaper_role` TO `r`@`%`", "GRANT PROXY ON ''@'%' TO 'r'@'%'",
                    "GRANT EXECUTE ON PROCEDURE `nova`.`p` TO `r`@`%`",
                    "SET DEFAULT ROLE `x` FOR `r`@`%`", ""):
        assert grants.parse_grant(nothing) is None, nothing


def test_the_read_grants_give_every_read_and_no_write():
    held = parsed(MARIADB_READ)
    assert grants.missing(held, "nova", grants.READ) == []
    assert set(grants.missing(held, "nova", grants.RECLAIM)) == set(
        grants.needs(grants.RECLAIM)) - set(grants.needs(grants.READ))
    assert grants.excess(held, "nova", grants.READ) == []
    # Another database's grants do not count.
    assert grants.missing(held, "nova_cell1", grants.READ) == grants.needs(grants.READ)


def test_wide_grants_cover_everything_and_are_reported_as_excess():
    for line, db in (("GRANT ALL PRIVILEGES ON *.* TO `r`@`%`", "nova"),
                     ("GRANT ALL ON `nova`.* TO `r`@`%`", "nova"),
                     ("GRANT SELECT, INSERT, UPDATE, DELETE ON `nova\\_%`.* TO `r`@`%`",
                      "nova_cell1")):
        held = parsed([line])
        assert grants.missing(held, db, grants.READ + grants.RECLAIM) == [], line
        assert grants.excess(held, db, grants.READ + grants.RECLAIM), line
    # `_` escaped is no wildcard; unescaped it is one.
    assert grants.missing(parsed(["GRANT ALL ON `nova\\_%`.* TO r"]), "novaxcell",
                          grants.READ)
    assert not grants.missing(parsed(["GRANT ALL ON `nova_%`.* TO r"]), "novaxcell",
                              grants.READ)
    # A table-level SELECT where columns would do is more than needed.
    held = parsed(MARIADB_READ + ["GRANT SELECT ON `nova`.`instances` TO `r`@`%`"])
    assert grants.excess(held, "nova", grants.READ) == ["SELECT ON nova.instances"]


def test_describe_missing_groups_by_table_and_privilege():
    gaps = [("UPDATE", "instance_faults", "deleted"), ("UPDATE", "instance_faults", "deleted_at"),
            ("DELETE", "instance_system_metadata", None)]
    assert grants.describe_missing(gaps, "nova") == (
        "UPDATE (deleted, deleted_at) ON nova.instance_faults, "
        "DELETE ON nova.instance_system_metadata")


# --------------------------------------------------------------------------
# [database] read_only
# --------------------------------------------------------------------------

def test_read_only_true_and_false_ask_nothing():
    eng = types.SimpleNamespace(url=sa.make_url("mysql+pymysql://r@db-that-does-not-exist/nova"))
    assert grants.detect(eng, "true") == grants.Access(False, "[database] read_only = true")
    assert grants.detect(eng, "false").writable


def test_auto_on_sqlite_follows_the_files_permissions(tmp_path):
    path = tmp_path / "nova.sqlite"
    eng = sa.create_engine(f"sqlite:///{path}")
    s.create_all(eng)
    assert grants.detect(eng).writable
    ro = sa.create_engine(f"sqlite:///file:{path}?mode=ro&uri=true")
    assert not grants.detect(ro).writable
    with pytest.raises(sa.exc.OperationalError, match="readonly"), ro.begin() as c:
        c.execute(sa.delete(s.instances))
    missing = grants.detect(sa.create_engine(f"sqlite:///{tmp_path / 'nope.sqlite'}"))
    assert not missing.writable and "does not exist" in missing.reason
    assert grants.detect(sa.create_engine("sqlite://")).writable
    if os.geteuid() != 0:           # root may write whatever the mode bits say
        os.chmod(path, 0o444)
        ro = grants.detect(eng)
        assert not ro.writable and "not writable" in ro.reason


def test_auto_on_an_unknown_dialect_is_read_only():
    eng = types.SimpleNamespace(url=sa.make_url("postgresql://r@db/nova"))
    acc = grants.detect(eng)
    assert not acc.writable and "read_only = false" in acc.reason
