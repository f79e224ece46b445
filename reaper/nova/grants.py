"""What the reaper reads and writes in Nova's DB, as GRANT statements, and whether the
configured account may write.

The tables below are derived from the statements of ``reaper.nova.view`` (the pass's
view and the executor's compare-and-act re-reads), ``reaper.nova.reclaim`` (claim,
adopt, release, finalize, leftovers), ``reaper.kinds.network.unplug`` (``db_claims``,
``vm_claims``) and ``reaper.kinds.iscsi.disconnect`` (``reread_bdms``); the functional test
``tests/functional/test_nova_db_grants.py`` runs every one of those paths as a MariaDB
account holding exactly these grants, so a statement that needs more fails there.

- :data:`READ`: what audits and every reap that does not reclaim need: ``SELECT`` on
  the columns read, no more (``instances.user_data`` and ``key_data``, for one, stay
  unreadable). A reap that tears down an evacuated or running-deleted guest, an
  orphan directory, a VIF or an iSCSI session only reads Nova's DB.
- :data:`RECLAIM`: the few extra privileges of a reclaim (``[reaper]
  reclaim_instance_interval`` above 0): the conditional claim of the ``instances``
  row, its ``reaper_claim`` marker in ``instance_system_metadata`` (inserted,
  compare-and-swapped on adoption, hard-deleted on release), and finalize, which
  leaves the rows as Nova's own reclaim does: ``instances.cleaned``, the
  ``clean_attempts`` system_metadata key (inserted or updated), the info cache's
  ``network_info`` emptied once the ports are released, the soft delete of the row
  and of its rows in every table of ``schema.DEPENDENT_TABLES``, and the hard delete
  of its ``tags`` and ``console_auth_tokens`` (no ``deleted`` column there).
  Column-level ``UPDATE``: the reaper can mark rows deleted, never rewrite what they
  hold (the host, the flavor, user data...). ``DELETE`` has no column level: it is
  granted on ``instance_system_metadata`` (the marker), ``tags`` and
  ``console_auth_tokens`` (what ``instance_destroy`` deletes) only.
- :data:`NOTIFY`: the further columns Nova's ``instance.delete.*`` notifications of a
  reclaim are made of (``reaper.nova.snapshot``: the flavor, metadata, timestamps...),
  granted with :data:`RECLAIM`. Only reads: without them a reclaim is still done and
  its events are logged as not sent.
- :data:`CTL`: ``reaper-ctl --all`` on a controller lists the hosts from ``services``;
  ``reaper-ctl finish`` also tells the hosts that are gone from it and reads the
  instance rows again before it finishes their leftovers.

Column privileges because a statement on MariaDB/MySQL needs ``SELECT`` on every
column it reads, WHERE clauses and ``SET deleted = id`` included, and nothing more.

:func:`detect` decides ``[database] read_only = auto``: the account may write only if
its grants cover every privilege of :data:`RECLAIM`, so that a reclaim is never
started that could not be finished (claimed and torn down, then unable to finalize).
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Iterable, Sequence

import sqlalchemy as sa

from reaper.nova import db as nova_db
from reaper.nova import schema as s
from reaper.nova import columns as nova_columns

READ_ONLY_CHOICES = ("auto", "true", "false")


@dataclasses.dataclass(frozen=True)
class TableGrant:
    """The privileges of one table: columns per privilege; ``delete`` is table-wide."""
    table: str
    select: tuple[str, ...] = ()
    update: tuple[str, ...] = ()
    insert: tuple[str, ...] = ()
    delete: bool = False
    why: str = ""

    def needs(self) -> list[tuple[str, str, str | None]]:
        """(privilege, table, column or None) for every single privilege held."""
        out = [("SELECT", self.table, c) for c in self.select]
        out += [("UPDATE", self.table, c) for c in self.update]
        out += [("INSERT", self.table, c) for c in self.insert]
        if self.delete:
            out.append(("DELETE", self.table, None))
        return out


def _uniq(*cols: Iterable[str]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for group in cols:
        for c in group:
            seen.setdefault(c, None)
    return tuple(seen)


_BDM_READ = _uniq(nova_columns.BDM_COLS, ("deleted",))
_MARKER_READ = ("id", "instance_uuid", "key", "value", "deleted")
_SOFT_DELETE = ("deleted", "deleted_at")

READ: tuple[TableGrant, ...] = (
    TableGrant("instances", select=nova_columns.INSTANCE_COLS,
               why="the pass's view, compare-and-act re-reads, VIF and volume ownership"),
    TableGrant("shadow_instances", select=nova_columns.INSTANCE_COLS,
               why="archived rows (nova-manage db archive_deleted_rows)"),
    TableGrant("migrations", select=nova_columns.MIGRATION_COLS,
               why="evacuations, resizes and migrations touching this host"),
    TableGrant("block_device_mapping", select=_BDM_READ,
               why="volumes of kept instances (iSCSI in-use checks) and reclaim leftovers"),
    TableGrant("instance_info_caches", select=("id", "instance_uuid", "network_info",
                                               "deleted"),
               why="VIF ownership (network_info)"),
    TableGrant("compute_nodes", select=("id", "uuid", "host", "hypervisor_hostname",
                                        "deleted"),
               why="the host identity guard"),
    TableGrant("instance_system_metadata", select=_MARKER_READ,
               why="reaper_claim markers: this host's claims told from Nova's own deletes"),
)

# instances: claim (task_state, updated_at), release (task_state, updated_at) and
# finalize (vm_state, task_state, power_state, cleaned, terminated_at, updated_at,
# deleted_at, deleted = id); every column they read is in READ.
_INSTANCE_WRITE = ("vm_state", "task_state", "power_state", "cleaned", "terminated_at",
                   "updated_at", "deleted_at", "deleted")
# What finalize writes in a dependent table besides the soft delete.
_FINALIZE_UPDATE = {"instance_info_caches": ("network_info", "updated_at")}


# migrations: an evacuation torn down here is marked completed (status, updated_at),
# as Nova's _destroy_evacuated_instances does; every column it reads is in READ.
_MIGRATION_WRITE = ("status", "updated_at")


def _reclaim() -> tuple[TableGrant, ...]:
    out = [
        TableGrant("instances", update=_INSTANCE_WRITE,
                   why="the conditional claim, its release, and finalize"),
        TableGrant("instance_system_metadata",
                   insert=("instance_uuid", "key", "value", "deleted", "created_at"),
                   update=_uniq(("value", "updated_at"), _SOFT_DELETE), delete=True,
                   why="the reaper_claim marker (insert, adopt, remove) and finalize"),
    ]
    read = {g.table: set(g.select) for g in READ}
    for table, col in s.DEPENDENT_TABLES:
        if table.name == "instance_system_metadata":
            continue            # above
        select = tuple(c for c in ("id", col, "deleted") if c not in read.get(table.name, ()))
        extra = _FINALIZE_UPDATE.get(table.name, ())
        why = "finalize soft-deletes the instance's rows" + (" (and empties network_info)" if extra else "")
        if table.name == "migrations":
            # reaper.nova.evacuation: an evacuation torn down here ends 'completed'.
            extra, why = _MIGRATION_WRITE, why + "; evacuations completed"
        out.append(TableGrant(table.name, select=select,
                              update=_uniq(extra, _SOFT_DELETE), why=why))
    for table, col in s.HARD_DELETED_TABLES:
        out.append(TableGrant(table.name, select=(col,), delete=True,
                              why="finalize deletes the instance's rows, as "
                                  "instance_destroy does"))
    return tuple(out)


RECLAIM: tuple[TableGrant, ...] = _reclaim()

def _notify() -> tuple[TableGrant, ...]:
    """SELECTs of the delete notifications (reaper.nova.snapshot), beyond READ and
    RECLAIM: only reclaims send them, so ``--reclaim`` grants them too."""
    from reaper.nova import snapshot as snap
    have: dict[str, set[str]] = {}
    for g in (*READ, *RECLAIM):
        have.setdefault(g.table, set()).update(g.select)
    out = []
    for table, cols in (("instances", snap.INSTANCE_COLS), ("instance_extra", snap.EXTRA_COLS),
                        ("instance_metadata", snap.METADATA_COLS),
                        ("instance_system_metadata", snap.SYSMETA_COLS),
                        ("instance_info_caches", snap.INFO_CACHE_COLS),
                        ("block_device_mapping", snap.BDM_COLS)):
        extra = tuple(c for c in cols if c not in have.get(table, ()))
        if extra:
            out.append(TableGrant(table, select=extra,
                                  why="Nova's instance.delete.* notifications of a reclaim"))
    return tuple(out)


# Not a write: [database] read_only = auto does not ask for these (a reclaim whose
# notification cannot be read is still done; the event is logged as not sent).
NOTIFY: tuple[TableGrant, ...] = _notify()

CTL: tuple[TableGrant, ...] = (
    TableGrant("services", select=("host", "binary", "deleted", "forced_down", "last_seen_up",
                                   "updated_at", "created_at"),
               why="reaper-ctl --all: the hosts running nova-compute; reaper-ctl finish: "
                   "which of them are gone"),
    TableGrant("instances", select=nova_columns.INSTANCE_COLS,
               why="reaper-ctl finish: the instance's row read again before acting"),
    TableGrant("shadow_instances", select=nova_columns.INSTANCE_COLS,
               why="reaper-ctl finish: an archived row counts as deleted"),
)


# --------------------------------------------------------------------------
# GRANT statements
# --------------------------------------------------------------------------

def _ident(name: str) -> str:
    return "`" + name.replace("`", "``") + "`"


def _literal(text: str) -> str:
    """A string literal whose meaning does not depend on NO_BACKSLASH_ESCAPES (names
    with a backslash are refused by :func:`check_name`)."""
    return "'" + text.replace("'", "''") + "'"


def check_name(what: str, text: str, longest: int) -> str:
    """A user, host or database name fit to be put into the script: not empty, no
    control character (a newline would end the script's comment lines), no backslash."""
    if not text:
        raise ValueError(f"the {what} is empty")
    if len(text) > longest:
        raise ValueError(f"the {what} is longer than {longest} characters")
    if any(ord(c) < 32 or ord(c) == 127 or c == "\\" for c in text):
        raise ValueError(f"the {what} {text!r} holds a control character or a backslash")
    return text


def grant_statement(g: TableGrant, database: str, account: str) -> str:
    privs = []
    for name, cols in (("SELECT", g.select), ("INSERT", g.insert), ("UPDATE", g.update)):
        if cols:
            privs.append(f"{name} ({', '.join(_ident(c) for c in cols)})")
    if g.delete:
        privs.append("DELETE")
    return f"GRANT {', '.join(privs)} ON {_ident(database)}.{_ident(g.table)} TO {account};"


def render(user: str = "reaper", host: str = "%", database: str = "nova", *,
           reclaim: bool = False, ctl: bool = False, create_user: bool = False) -> str:
    """The SQL script: the read grants, and the reclaim (or reaper-ctl) ones if asked.
    ValueError for a name that cannot be put into it."""
    check_name("user name", user, 128)
    check_name("host", host, 255)
    check_name("database name", database, 64)
    account = f"{_literal(user)}@{_literal(host)}"
    lines = [f"-- Nova DB grants of the reaper: account {account}, database "
             f"{_ident(database)}.",
             "-- Generated by: reaper-manage db-grants "
             + " ".join(_args(user, host, database, reclaim, ctl, create_user)),
             "-- Column-level: each statement names exactly the columns the reaper reads "
             "or writes."]
    if create_user:
        lines += ["", f"CREATE USER IF NOT EXISTS {account} IDENTIFIED BY 'CHANGE-ME';"]
    sections = [("Read-only: audit, and every reap that does not reclaim.", READ)]
    if reclaim:
        sections.append(("Reclaim ([reaper] reclaim_instance_interval > 0): the claim, "
                         "its marker, finalize.", RECLAIM))
        sections.append(("Reclaim's delete notifications ([notifications] "
                         "nova_delete_events): what Nova's payload is made of.", NOTIFY))
    if ctl:
        sections.append(("reaper-ctl --all and finish (on a controller): the nova-compute "
                         "hosts, and the instance rows finish reads again.", CTL))
    for title, grants in sections:
        lines += ["", f"-- {title}"]
        lines += [grant_statement(g, database, account) for g in grants]
    return "\n".join(lines) + "\n"


def _args(user, host, database, reclaim, ctl, create_user) -> list[str]:
    import shlex
    out = ["--user", shlex.quote(user), "--host", shlex.quote(host),
           "--database", shlex.quote(database)]
    out += [flag for flag, on in (("--reclaim", reclaim), ("--ctl", ctl),
                                  ("--create-user", create_user)) if on]
    return out


def needs(grants: Sequence[TableGrant]) -> list[tuple[str, str, str | None]]:
    return [n for g in grants for n in g.needs()]


# --------------------------------------------------------------------------
# SHOW GRANTS
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Grant:
    """One parsed GRANT line: the object and what it gives there."""
    database: str               # "*" or a name / LIKE pattern (database-level grants)
    table: str                  # "*" or a table name
    privileges: frozenset[str]  # table-, database- or global-level privileges
    columns: tuple[tuple[str, frozenset[str]], ...] = ()   # privilege -> columns

    def column_privs(self, privilege: str) -> frozenset[str]:
        return next((cols for p, cols in self.columns if p == privilege), frozenset())


_QUOTED = r"`(?:[^`]|``)*`"
_OBJECT = re.compile(rf"^(?:TABLE\s+)?(?P<db>\*|{_QUOTED}|\w+)\.(?P<tbl>\*|{_QUOTED}|\w+)$")


def _unquote(name: str) -> str:
    if name.startswith("`") and name.endswith("`"):
        return name[1:-1].replace("``", "`")
    return name


def _top_level(text: str):
    """The indices of ``text`` outside backquotes and parentheses (SHOW GRANTS
    quotes names with backquotes and lists columns in parentheses)."""
    depth, quoted = 0, False
    for i, ch in enumerate(text):
        if ch == "`":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        if not quoted and depth == 0:
            yield i


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside parentheses and backquotes."""
    parts, last = [], 0
    for i in _top_level(text):
        if text[i] == sep:
            parts.append(text[last:i])
            last = i + 1
    parts.append(text[last:])
    return [p.strip() for p in parts if p.strip()]


def _find_keyword(text: str, word: str) -> int:
    """Index of `` word `` outside backquotes and parentheses, or -1."""
    target = f" {word} "
    return next((i for i in _top_level(text) if text.startswith(target, i)), -1)


def parse_grant(line: str) -> Grant | None:
    """A ``SHOW GRANTS`` line as a :class:`Grant`; None for what grants no table
    privilege (a role, PROXY, a routine)."""
    line = " ".join(line.split())
    if not line.upper().startswith("GRANT "):
        return None
    rest = line[len("GRANT "):]
    on = _find_keyword(" " + rest, "ON")
    if on < 0:
        return None             # GRANT role TO user
    privs_text = rest[:on].strip()
    after = rest[on + len("ON "):].strip()
    to = _find_keyword(" " + after, "TO")
    if to < 0:
        return None
    obj = _OBJECT.match(after[:to].strip())
    if obj is None:
        return None             # PROCEDURE/FUNCTION/PACKAGE, PROXY ON ''@'%'
    table_privs: set[str] = set()
    columns: dict[str, set[str]] = {}
    for item in _split_top(privs_text):
        m = re.match(r"^(?P<name>[A-Za-z][A-Za-z ]*?)\s*(?:\((?P<cols>.*)\))?$", item, re.S)
        if m is None:
            continue
        name = " ".join(m["name"].upper().split())
        if name == "ALL":
            name = "ALL PRIVILEGES"
        if m["cols"] is None:
            table_privs.add(name)
        else:
            columns.setdefault(name, set()).update(_unquote(c) for c in _split_top(m["cols"]))
    return Grant(database=_unquote(obj["db"]), table=_unquote(obj["tbl"]),
                 privileges=frozenset(table_privs),
                 columns=tuple(sorted((p, frozenset(c)) for p, c in columns.items())))


def _like(pattern: str, name: str) -> bool:
    """MySQL's database-name matching in grants: ``%``, ``_``, ``\\`` escapes."""
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.fullmatch("".join(out), name, re.S) is not None


def holds(grants: Iterable[Grant], database: str,
          need: tuple[str, str, str | None]) -> bool:
    """Whether ``grants`` give ``need`` = (privilege, table, column or None)."""
    privilege, table, column = need
    for g in grants:
        if g.database == "*":
            pass
        elif g.table == "*":
            if not _like(g.database, database):
                continue
        elif g.database != database or g.table != table:
            continue
        if privilege in g.privileges or "ALL PRIVILEGES" in g.privileges:
            return True
        if column is not None and g.table != "*" and column in g.column_privs(privilege):
            return True
    return False


def missing(grants: Iterable[Grant], database: str,
            wanted: Sequence[TableGrant]) -> list[tuple[str, str, str | None]]:
    grants = list(grants)
    return [n for n in needs(wanted) if not holds(grants, database, n)]


def describe_missing(missing_needs: Sequence[tuple[str, str, str | None]],
                     database: str, limit: int = 6) -> str:
    """``UPDATE (deleted, deleted_at) ON nova.instance_faults, ...`` (grouped)."""
    groups: dict[tuple[str, str], list[str]] = {}
    for priv, table, col in missing_needs:
        groups.setdefault((priv, table), [])
        if col is not None:
            groups[(priv, table)].append(col)
    parts = [f"{priv}{' (' + ', '.join(cols) + ')' if cols else ''} ON {database}.{table}"
             for (priv, table), cols in groups.items()]
    more = f" and {len(parts) - limit} more" if len(parts) > limit else ""
    return ", ".join(parts[:limit]) + more


def excess(grants: Iterable[Grant], database: str,
           wanted: Sequence[TableGrant]) -> list[str]:
    """What ``grants`` give beyond ``wanted`` on ``database`` (or everywhere), one
    phrase each: a security review's question, reported by ``db-grants --check``."""
    allowed = set(needs(wanted))
    out = []
    for g in grants:
        real = sorted(g.privileges - {"USAGE"})
        where = (f"{g.database}.{g.table}" if g.database != "*" else "*.*")
        if g.table == "*":
            if real and (g.database == "*" or _like(g.database, database)):
                out.append(f"{', '.join(real)} ON {where}")
            continue
        if g.database != database:
            continue
        # A table-level privilege covers every column: more than a column-level need.
        extra = [p for p in real if (p, g.table, None) not in allowed]
        extra += [f"{p} ({', '.join(sorted(c for c in cols if (p, g.table, c) not in allowed))})"
                  for p, cols in g.columns if any((p, g.table, c) not in allowed for c in cols)]
        if extra:
            out.append(f"{', '.join(extra)} ON {where}")
    return out


# --------------------------------------------------------------------------
# [database] read_only
# --------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Access:
    """May the reaper write to Nova's DB, and why (a sentence for reports)."""
    writable: bool
    reason: str
    queries: int = 0


def detect(engine: sa.Engine, setting: str = "auto") -> Access:
    """``[database] read_only`` resolved for ``engine``. Never raises: a check that
    fails counts as read-only for now (nothing is written on a guess)."""
    setting = (setting or "auto").lower()
    if setting == "true":
        return Access(False, "[database] read_only = true")
    if setting == "false":
        return Access(True, "[database] read_only = false")
    url = engine.url
    backend = url.get_backend_name()
    if backend == "sqlite":
        return _sqlite_access(url)
    if backend == "mysql":
        return _mysql_access(engine)
    return Access(False, f"[database] read_only = auto cannot tell what a {backend} "
                         f"account may write: set [database] read_only = false to let the "
                         f"reaper reclaim")


def _sqlite_access(url: sa.URL) -> Access:
    path = url.database
    if not path or path == ":memory:" or url.query.get("mode") == "memory":
        return Access(True, "an in-memory SQLite database")
    # pysqlite honours SQLite's URI parameters only with uri=true.
    uri = str(url.query.get("uri", "")).lower() in ("true", "1")
    if uri and (url.query.get("mode") == "ro" or str(url.query.get("immutable")) == "1"):
        return Access(False, f"the SQLite database {path} is opened read-only (mode=ro)")
    if path.startswith("file:"):
        path = path[len("file:"):].split("?", 1)[0]
    if not os.path.exists(path):
        return Access(False, f"the SQLite database {path} does not exist")
    # SQLite writes a journal (or WAL) next to the file: both must be writable.
    for p, what in ((path, "file"), (os.path.dirname(os.path.abspath(path)), "directory")):
        if not os.access(p, os.W_OK):
            return Access(False, f"the SQLite database's {what} {p} is not writable by "
                                 f"this process (read-only DB: [database] read_only = auto)")
    return Access(True, f"the SQLite database {path} is writable")


def _mysql_access(engine: sa.Engine) -> Access:
    database = engine.url.database
    try:
        with engine.connect() as conn:
            lines = [r[0] for r in conn.execute(sa.text("SHOW GRANTS"))]
            if not database:
                database = conn.execute(sa.text("SELECT DATABASE()")).scalar()
            conn.rollback()
    except sa.exc.SQLAlchemyError as exc:
        return Access(False, f"cannot read the Nova DB account's grants "
                             f"({nova_db.describe_error(exc, engine)}): no write this pass",
                      queries=1)
    queries = 1 + (0 if engine.url.database else 1)
    if not database:
        return Access(False, "[database] connection names no database: no write",
                      queries=queries)
    gaps = missing((g for g in map(parse_grant, lines) if g is not None), database, RECLAIM)
    if gaps:
        none = len(gaps) == len(needs(RECLAIM))
        what = ("holds none of the privileges a reclaim writes with" if none else
                f"lacks {describe_missing(gaps, database)}, which a reclaim needs to finish")
        return Access(False, f"the Nova DB account {what} (read-only DB: "
                             f"[database] read_only = auto; `reaper-manage db-grants "
                             f"--reclaim` prints the grants)", queries=queries)
    return Access(True, "the Nova DB account's grants cover every write of a reclaim",
                  queries=queries)
