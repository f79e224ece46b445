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
from reaper.conf import CONF

LOG = logging.getLogger(__name__)


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
