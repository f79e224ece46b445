"""The reaper's reclaim leaves Nova's databases exactly as Nova's own reclaim does,
proven on Nova's own code (the ``nova`` package from PyPI, .venv-nova).

One Nova DB (cell and API) is built by Nova itself (its migrations, its objects:
tests/fixtures/novadb_nova_side.py) with a soft-deleted instance holding a row in
every table the reaper's finalize touches, and a bystander instance. It is copied;
on one copy Nova's own code makes the DB writes of nova-compute's reclaim, in a
subprocess of the nova venv; on the other the reaper (this venv) claims and
finalizes. Then every table of both is compared row by row.

The only normalization: timestamps (``DateTime`` columns) compare as set or NULL,
since the two runs happen at different times (Nova also stores microseconds on
SQLite, the reaper whole seconds). On MariaDB one more difference is expected and
asserted: the ``clean_attempts`` system_metadata row's ``id`` (and so its
``deleted``, which is its id) is one higher on the reaper's side, because InnoDB
does not reuse the auto-increment value its claim marker row consumed (SQLite reuses
the highest rowid once that row is gone, so there the ids are equal too).
"""
from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import uuid as uuidlib

import pytest
import sqlalchemy as sa

from reaper.nova import db as nova_db
from reaper.nova import reclaim
from tests.conftest import REPO, nova_venv_python, service_unavailable

pytestmark = pytest.mark.functional

NOVA_SIDE = REPO / "tests" / "fixtures" / "novadb_nova_side.py"
HOST = "novadb-parity-host"
TIMEOUT = 300


def new_uuid() -> str:
    return str(uuidlib.uuid4())


def spec() -> dict:
    u = new_uuid
    return dict(uuid=u(), bystander=u(), host=HOST, port_id=u(), network_id=u(),
                image_id=u(), volume_id=u()[:32], attachment_id=u()[:32], cell_uuid=u())


def nova_conf(path, cell_url: str, api_url: str) -> str:
    path.write_text(f"[DEFAULT]\nhost = {HOST}\nstate_path = {path.parent}\n"
                    f"[database]\nconnection = {cell_url}\n"
                    f"[api_database]\nconnection = {api_url}\n")
    return str(path)


def nova(python: str, *args: str) -> dict:
    """Run Nova's side in the nova venv; its JSON answer."""
    r = subprocess.run([python, str(NOVA_SIDE), *args], capture_output=True, text=True,
                       timeout=TIMEOUT, env={"PATH": os.environ.get("PATH", ""),
                                             "HOME": os.environ.get("HOME", "/root")})
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


def dump(url: str) -> dict[str, dict[tuple, dict]]:
    """Every row of every table: {table: {primary key: {column: value}}}, timestamps
    replaced by whether they are set."""
    eng = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        meta = sa.MetaData()
        meta.reflect(eng)
        out = {}
        with eng.connect() as conn:
            for name, table in sorted(meta.tables.items()):
                pk = list(table.primary_key.columns) or list(table.columns)
                rows = {}
                for r in conn.execute(sa.select(table)).mappings():
                    row = {c: ("<set>" if v is not None else None)
                           if isinstance(table.c[c].type, sa.DateTime) else v
                           for c, v in r.items()}
                    rows[tuple(r[c.name] for c in pk)] = row
                out[name] = rows
        return out
    finally:
        eng.dispose()


def differences(a: dict, b: dict) -> list[tuple]:
    """(table, primary key, column, nova's value, reaper's value), rows missing on one
    side as column None."""
    out = []
    for table in sorted(set(a) | set(b)):
        ra, rb = a.get(table, {}), b.get(table, {})
        for key in sorted(set(ra) | set(rb), key=repr):
            if key not in ra or key not in rb:
                out.append((table, key, None, ra.get(key), rb.get(key)))
                continue
            for col in ra[key]:
                if ra[key][col] != rb[key].get(col):
                    out.append((table, key, col, ra[key][col], rb[key].get(col)))
    return out


def reaper_reclaim(cell_url: str, uuid: str) -> dict:
    """The reaper's claim and finalize, as its executor runs them for this host's
    reclaim with the ports released (the Neutron step done) and the files gone."""
    eng = nova_db.make_engine(cell_url)
    try:
        now = datetime.datetime.now(datetime.timezone.utc)
        assert reclaim.claim(eng, uuid, HOST, 3600, now, "req-parity")
        res = reclaim.finalize(eng, uuid, now, host=HOST, cleaned=True, ports_released=True)
        assert res["result"] == "finalized", res
        return res
    finally:
        eng.dispose()


def changed(before: dict, after: dict) -> set[str]:
    return {t for t in before if before[t] != after.get(t)}


# The tables the reclaim of the instance changes, on both sides (the comparison is not
# vacuous: each of them differs from the DB before the reclaim).
CHANGED = {"instances", "instance_system_metadata", "instance_info_caches",
           "block_device_mapping", "instance_metadata", "instance_extra", "instance_faults",
           "security_group_instance_association", "virtual_interfaces", "migrations",
           "instance_id_mappings", "tags", "console_auth_tokens"}


def test_reclaim_leaves_nova_dbs_as_novas_own_reclaim_on_sqlite(tmp_path):
    """SQLite: the cell DB identical row by row (timestamps as set/NULL), the API DB
    untouched by both."""
    python = nova_venv_python()
    sp = spec()
    (tmp_path / "spec.json").write_text(json.dumps(sp))
    base = {k: tmp_path / f"base-{k}.sqlite" for k in ("cell", "api")}
    built = nova(python, "build", nova_conf(tmp_path / "base.conf",
                                            f"sqlite:///{base['cell']}",
                                            f"sqlite:///{base['api']}"),
                 str(tmp_path / "spec.json"))
    urls = {}
    for side in ("nova", "reaper"):
        for k in ("cell", "api"):
            copy = tmp_path / f"{side}-{k}.sqlite"
            shutil.copyfile(base[k], copy)
            urls[side, k] = f"sqlite:///{copy}"
    before = dump(f"sqlite:///{base['cell']}")
    api_before = dump(f"sqlite:///{base['api']}")
    assert api_before["instance_mappings"], "the API DB has the instance's mapping"

    nova(python, "delete", nova_conf(tmp_path / "nova.conf", urls["nova", "cell"],
                                     urls["nova", "api"]), sp["uuid"])
    res = reaper_reclaim(urls["reaper", "cell"], sp["uuid"])

    after_nova, after_reaper = dump(urls["nova", "cell"]), dump(urls["reaper", "cell"])
    assert changed(before, after_nova) == CHANGED, built
    assert changed(before, after_reaper) == CHANGED, res
    assert differences(after_nova, after_reaper) == []
    # Nova's reclaim does not touch the API DB (nova-compute cannot reach it), and
    # neither does the reaper: instance_mappings stays queued_for_delete.
    assert dump(urls["nova", "api"]) == api_before == dump(urls["reaper", "api"])
    row = next(r for r in after_reaper["instances"].values() if r["uuid"] == sp["uuid"])
    assert (row["vm_state"], row["cleaned"], row["deleted"]) == ("deleted", 1, row["id"])


def _copy_database(server: sa.Engine, source: str, target: str) -> None:
    """A copy of every table's definition and rows (CREATE TABLE ... LIKE keeps the
    columns, keys and indexes, not the foreign keys: Nova's side runs on the copy)."""
    with server.begin() as conn:
        conn.execute(sa.text(f"CREATE DATABASE `{target}` CHARACTER SET utf8mb4"))
        conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 0"))
        for (table,) in conn.execute(sa.text(f"SHOW TABLES FROM `{source}`")).all():
            conn.execute(sa.text(f"CREATE TABLE `{target}`.`{table}` LIKE "
                                 f"`{source}`.`{table}`"))
            conn.execute(sa.text(f"INSERT INTO `{target}`.`{table}` SELECT * FROM "
                                 f"`{source}`.`{table}`"))
        conn.execute(sa.text("SET FOREIGN_KEY_CHECKS = 1"))


def _by_key(rows: dict) -> dict:
    """instance_system_metadata keyed by (instance_uuid, key), ``id`` dropped and
    ``deleted`` as whether it is the row's id."""
    return {(r["instance_uuid"], r["key"]): {
        **{c: v for c, v in r.items() if c not in ("id", "deleted")},
        "deleted": "id" if r["deleted"] == r["id"] else r["deleted"]} for r in rows.values()}


def test_reclaim_leaves_the_cell_db_as_novas_own_reclaim_on_mariadb(tmp_path,
                                                                     _mariadb_server):
    """MariaDB: the reaper's side on the schema Nova's migrations make (foreign keys
    included); identical to Nova's own reclaim row by row, but for the id of the
    clean_attempts row (InnoDB does not reuse the id of the claim marker)."""
    if not isinstance(_mariadb_server, sa.Engine):
        service_unavailable("MariaDB", getattr(_mariadb_server, "orig", _mariadb_server))
    python = nova_venv_python()
    server = _mariadb_server
    sp = spec()
    (tmp_path / "spec.json").write_text(json.dumps(sp))
    hexa = uuidlib.uuid4().hex[:10]
    names = {side: f"novadb_parity_{hexa}_{side}" for side in ("reaper", "nova")}
    url = {side: server.url.set(database=name, query={"charset": "utf8mb4"})
           .render_as_string(hide_password=False) for side, name in names.items()}
    api = {side: f"sqlite:///{tmp_path / f'{side}-api.sqlite'}" for side in names}
    try:
        with server.begin() as conn:
            conn.execute(sa.text(f"CREATE DATABASE `{names['reaper']}` CHARACTER SET utf8mb4"))
        nova(python, "build", nova_conf(tmp_path / "reaper.conf", url["reaper"], api["reaper"]),
             str(tmp_path / "spec.json"))
        _copy_database(server, names["reaper"], names["nova"])
        before = dump(url["reaper"])
        assert dump(url["nova"]) == before

        nova(python, "delete", nova_conf(tmp_path / "nova.conf", url["nova"],
                                         "sqlite:///" + str(tmp_path / "unused-api.sqlite")),
             sp["uuid"])
        reaper_reclaim(url["reaper"], sp["uuid"])

        after_nova, after_reaper = dump(url["nova"]), dump(url["reaper"])
        assert changed(before, after_nova) == CHANGED
        assert changed(before, after_reaper) == CHANGED
        ism = "instance_system_metadata"
        (n_id,) = [k[0] for k, r in after_nova[ism].items() if r["key"] == "clean_attempts"]
        (r_id,) = [k[0] for k, r in after_reaper[ism].items() if r["key"] == "clean_attempts"]
        assert r_id == n_id + 1         # the claim marker's auto-increment value
        assert _by_key(after_nova[ism]) == _by_key(after_reaper[ism])
        rest = {t: rows for t, rows in after_nova.items() if t != ism}
        assert differences(rest, {t: r for t, r in after_reaper.items() if t != ism}) == []
    finally:
        with server.begin() as conn:
            for name in names.values():
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
