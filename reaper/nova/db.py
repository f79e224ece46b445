"""Connections to Nova's main database: options, engines, error text, query counting.

The reaper reads Nova's DB every pass (``reaper.nova.view``) and writes it only to
finalize a reclaim (``reaper.nova.reclaim``). Nothing here runs a query at import.

Error handling contract: the view never raises (it returns ``NovaView(ok=False)``);
the compare-and-act and reclaim helpers raise :class:`NovaDBError`, whose message
names the database with its password hidden and never carries SQL parameters.
"""
from __future__ import annotations

import sqlite3
from typing import Any

import sqlalchemy as sa
import tenacity
from oslo_config import cfg
from oslo_log import log as logging
from sqlalchemy import event

from reaper import exception
from reaper.config import CONF

LOG = logging.getLogger(__name__)

database_opts = [
    cfg.StrOpt("connection", secret=True,
               help="SQLAlchemy URL of Nova's main (cell) database, e.g. "
                    "mysql+pymysql://nova:PASSWORD@controller/nova?charset=utf8 or "
                    "sqlite:////path/nova.sqlite. Read every pass; written only to "
                    "finalize a reclaim."),
    cfg.IntOpt("connection_recycle_time", default=3600, min=-1,
               help="Seconds after which a pooled connection is replaced (pool_recycle); "
                    "keep below the server's wait_timeout. -1 never recycles."),
    cfg.IntOpt("max_retries", default=3, min=0,
               help="How many times to retry connecting at start-up (wait_for_db) before "
                    "giving up. A pass that cannot reach the DB does no destructive work "
                    "and retries on the next pass."),
    cfg.FloatOpt("retry_interval", default=1.0, min=0.0,
                 help="Seconds between start-up connection attempts."),
    cfg.IntOpt("connect_timeout", default=10, min=1,
               help="Seconds to wait for a TCP connection to a MySQL/MariaDB server."),
    cfg.IntOpt("query_timeout", default=60, min=1,
               help="Seconds to wait for a MySQL/MariaDB server to answer one read or "
                    "write on the socket (PyMySQL read_timeout/write_timeout), so a "
                    "hung server cannot stall a pass forever."),
    cfg.StrOpt("read_only", default="auto",
               choices=[("auto", "decide from the account's grants (MySQL/MariaDB) or the "
                                 "file's permissions (SQLite), at each pass that would "
                                 "write"),
                        ("true", "never write to Nova's DB: reclaim is off"),
                        ("false", "do not check: reclaims write, and a write the account "
                                  "may not make fails as a failed action")],
               help="Whether the reaper may write to Nova's DB. Only a reclaim writes "
                    "(the conditional claim of the instances row, its reaper_claim marker "
                    "in instance_system_metadata, and finalize's soft delete of the row "
                    "and its dependent rows); audits and every reap that does not reclaim "
                    "(evacuated and running-deleted guests, instance directories, VIFs, "
                    "iSCSI sessions) only read, so an account holding only the read "
                    "grants (reaper-manage db-grants prints them) runs them all. "
                    "Read-only, reclaimable instances and this host's stranded claims "
                    "are reported with action 'log' and the reason, never claimed, "
                    "released or finalized, and a journaled reclaim is not resumed (it "
                    "waits, reported as held_read_only, until the DB may be written "
                    "again). 'auto' asks at each pass that has such a write to do: on "
                    "MySQL/MariaDB, SHOW GRANTS must cover every privilege of "
                    "reaper-manage db-grants --reclaim (all of them, so that no reclaim "
                    "starts that could not be finished), else the DB counts as "
                    "read-only; on SQLite, the file and its directory must be writable; "
                    "any other database counts as read-only. Grants that come through a "
                    "role are not seen by 'auto': set 'false' then. "
                    "reaper-manage db-grants --check shows what the account holds and "
                    "what 'auto' decides."),
]

api_database_opts = [
    cfg.StrOpt("connection", secret=True,
               help="SQLAlchemy URL of Nova's API database (nova_api), spelled as in "
                    "nova.conf so that the same section can be copied here. The reaper "
                    "never connects to it, whether it is set or not, because Nova's own "
                    "reclaim leaves the API database untouched: nova-compute's "
                    "_reclaim_queued_deletes -> _delete_instance -> instance_destroy "
                    "writes only the cell database; the instance's instance_mappings "
                    "row keeps queued_for_delete = true (set by nova-api when the "
                    "instance was soft-deleted) and, like its request_specs row, is "
                    "removed only when `nova-manage db archive_deleted_rows` archives "
                    "the deleted instance. A reclaim by the reaper leaves it exactly so, "
                    "and needs no grant on the API database."),
]

CONF.register_opts(database_opts, group="database")
CONF.register_opts(api_database_opts, group="api_database")


def list_opts():
    return [("database", database_opts), ("api_database", api_database_opts)]


# SQLite builds before 3.32 allow 999 host parameters per statement, later ones 32766.
_SQLITE_MAX_PARAMS = 32766 if sqlite3.sqlite_version_info >= (3, 32, 0) else 999


def max_in_params(engine: sa.Engine) -> int:
    """Largest uuid list sent in one ``IN (...)``; longer lists are split into batches.

    MySQL/MariaDB have no practical limit on parameters (PyMySQL inlines them; only
    max_allowed_packet, 16 MiB+ by default, bounds a statement: 10,000 uuids are about
    400 KiB). SQLite limits host parameters per statement, so stay below its limit with
    room for the handful of other parameters in the same statement.
    """
    if engine.dialect.name == "sqlite":
        return min(10000, _SQLITE_MAX_PARAMS - 50)
    return 10000


def make_engine(url: str | sa.URL, *, recycle: int = 3600, connect_timeout: int = 10,
                query_timeout: int = 60, **kw: Any) -> sa.Engine:
    """An engine for Nova's DB. Lazy: nothing connects until the first query.

    ``pool_pre_ping`` replaces connections the server dropped between passes. SQLite
    gets a 30 s busy timeout (a writer holding the file lock makes readers wait instead
    of failing); MySQL gets connect and socket timeouts.
    """
    url = sa.make_url(url)
    connect_args = dict(kw.pop("connect_args", {}) or {})
    if url.get_backend_name() == "sqlite":
        connect_args.setdefault("timeout", 30)
    elif url.get_backend_name() == "mysql" and url.get_driver_name() in ("pymysql", ""):
        connect_args.setdefault("connect_timeout", connect_timeout)
        connect_args.setdefault("read_timeout", query_timeout)
        connect_args.setdefault("write_timeout", query_timeout)
    kw.setdefault("pool_pre_ping", True)
    kw.setdefault("pool_recycle", recycle)
    return sa.create_engine(url, connect_args=connect_args, **kw)


def engine_from_conf(conf: cfg.ConfigOpts = CONF) -> sa.Engine:
    """The engine for ``[database] connection``; NovaDBError if it is unset or malformed."""
    url = conf.database.connection
    if not url:
        raise exception.NovaDBError("[database] connection is not set")
    try:
        return make_engine(url, recycle=conf.database.connection_recycle_time,
                           connect_timeout=conf.database.connect_timeout,
                           query_timeout=conf.database.query_timeout)
    except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError, ValueError) as exc:
        # The message of a URL parse error may echo the URL: do not repeat it.
        raise exception.NovaDBError(f"[database] connection is not a usable SQLAlchemy URL "
                                    f"({type(exc).__name__})") from None


def safe_url(engine_or_url: sa.Engine | sa.URL | str) -> str:
    url = engine_or_url.url if isinstance(engine_or_url, sa.Engine) else sa.make_url(engine_or_url)
    return url.render_as_string(hide_password=True)


def describe_error(exc: BaseException, engine: sa.Engine | None = None) -> str:
    """One line saying what failed, without the password, the SQL or its parameters."""
    orig = getattr(exc, "orig", None)
    if orig is not None:
        what = f"{type(orig).__name__}: {orig}"
    elif isinstance(exc, sa.exc.SQLAlchemyError):
        # str() of SQLAlchemy errors may append SQL and parameters: keep the first line.
        what = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    else:
        what = f"{type(exc).__name__}: {exc}"
    if engine is not None:
        what = f"{what} (database {safe_url(engine)})"
        password = engine.url.password
        # Drivers do not echo passwords, but make sure; very short ones would only
        # mangle the text ("y" in every word) and are no secret anyway.
        if password and len(password) >= 4:
            what = what.replace(str(password), "***")
    return what


def is_missing_table(exc: BaseException) -> bool:
    """True when the error says a table does not exist (MySQL 1146, SQLite, PostgreSQL)."""
    orig = getattr(exc, "orig", exc)
    args = getattr(orig, "args", ())
    if args and args[0] == 1146:
        return True
    text = str(orig).lower()
    return "no such table" in text or ("doesn't exist" in text and "table" in text) \
        or ("relation" in text and "does not exist" in text)


def wait_for_db(engine: sa.Engine, max_retries: int = 3, retry_interval: float = 1.0) -> None:
    """Run ``SELECT 1`` until it works, ``max_retries`` retries apart by ``retry_interval``.

    For start-up only; raises NovaDBError with a safe message when it never works.
    """
    def _ping():
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    retrying = tenacity.Retrying(
        stop=tenacity.stop_after_attempt(max_retries + 1),
        wait=tenacity.wait_fixed(retry_interval),
        retry=tenacity.retry_if_exception_type(sa.exc.DBAPIError),
        reraise=True,
        before_sleep=lambda rs: LOG.warning(
            "Nova DB not reachable yet (attempt %d): %s", rs.attempt_number,
            describe_error(rs.outcome.exception(), engine)),
    )
    try:
        retrying(_ping)
    except sa.exc.SQLAlchemyError as exc:
        raise exception.NovaDBError(describe_error(exc, engine)) from None


class QueryCounter:
    """Counts statements sent to the database (round trips) through ``engine``.

    Uses the ``before_cursor_execute`` event, so it sees every statement the engine
    (or the one Connection given) runs, whoever runs it; pool pre-pings and the
    driver's own handshake are not statements and are not counted::

        with QueryCounter(engine) as qc:
            load_view(engine, host, uuids)
        assert qc.count == 5
    """

    def __init__(self, target: sa.Engine | sa.Connection, keep_statements: bool = False):
        self.target = target
        self.count = 0
        self.keep_statements = keep_statements
        self.statements: list[str] = []
        self._listening = False

    def _before(self, conn, cursor, statement, parameters, context, executemany):
        self.count += 1
        if self.keep_statements:
            self.statements.append(statement)

    def start(self) -> QueryCounter:
        if not self._listening:
            event.listen(self.target, "before_cursor_execute", self._before)
            self._listening = True
        return self

    def stop(self) -> None:
        if self._listening:
            event.remove(self.target, "before_cursor_execute", self._before)
            self._listening = False

    def reset(self) -> None:
        self.count = 0
        self.statements.clear()

    def __enter__(self) -> QueryCounter:
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
