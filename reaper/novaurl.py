"""``[database] connection`` checked before any Nova DB engine is built.

Two ways an operator's URL went wrong without a useful word:

- ``mysql://`` means SQLAlchemy's default MySQL driver, MySQLdb (mysqlclient),
  which the reaper does not depend on: the error was "not a usable SQLAlchemy URL
  (ModuleNotFoundError)". nova.conf spells it ``mysql+pymysql://`` and PyMySQL
  comes with the reaper, so the error says exactly that. The URL is not rewritten
  to PyMySQL behind the operator's back: where mysqlclient is installed,
  ``mysql://`` works as SQLAlchemy defines it.
- A SQLite URL whose file does not exist: SQLite creates an empty database on the
  first connection, so a mistyped path became an empty Nova DB and every pass a
  "no such table" guard. The Nova DB is Nova's: the reaper never creates it. A
  missing file (or an in-memory database) is refused at start-up, and the engine
  opens the file read-write without the create flag, so a file that disappears
  later is an error too, never a new empty database.
"""
from __future__ import annotations

import importlib.util
import os
import urllib.parse

import sqlalchemy as sa
from sqlalchemy import event

from reaper import exception


def check(url: str | None) -> None:
    """Raise :class:`BadNovaURL` when ``url`` cannot work as written; unset or
    unparsable URLs are left to ``reaper.nova.db.engine_from_conf``, which says so."""
    if not url:
        return
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        return
    backend, driver = parsed.get_backend_name(), parsed.get_driver_name()
    if backend == "mysql" and driver == "mysqldb" and not _importable("MySQLdb"):
        raise exception.BadNovaURL(
            "[database] connection: mysql:// selects the MySQLdb driver (mysqlclient), "
            "which is not installed; write mysql+pymysql:// as in nova.conf (PyMySQL "
            "is installed with the reaper)")
    if backend == "sqlite":
        path = sqlite_path(parsed)
        if path is None:
            raise exception.BadNovaURL("[database] connection: an in-memory SQLite database is "
                                       "always empty; name the Nova DB's file")
        if not os.path.isfile(path):
            raise exception.BadNovaURL(
                f"[database] connection: the SQLite file {path} does not exist (a "
                f"mistyped path?); the reaper reads Nova's DB and never creates it")


def sqlite_path(url: sa.URL) -> str | None:
    """The absolute file path of a SQLite URL (plain or ``uri=true``), None for an
    in-memory database."""
    db = url.database or ""
    if url.query.get("uri") in ("true", "1", "True"):
        if not db.startswith("file:"):
            return db or None
        parts = urllib.parse.urlsplit(db)
        if urllib.parse.parse_qs(parts.query).get("mode") == ["memory"]:
            return None
        db = urllib.parse.unquote(parts.path)
    if db in ("", ":memory:"):
        return None
    return os.path.abspath(db)


def never_create(engine: sa.Engine) -> None:
    """Make a SQLite engine open its file read-write only (SQLite's ``mode=rw``): a
    file gone since start-up is an error, not a new empty Nova DB. URLs that are
    already SQLite URIs (``uri=true``) are opened as written."""
    url = engine.url
    if url.get_backend_name() != "sqlite" or url.query.get("uri") in ("true", "1", "True"):
        return
    path = sqlite_path(url)
    if path is None:
        return

    @event.listens_for(engine, "do_connect")
    def _rw_only(dialect, conn_rec, cargs, cparams):
        cargs[:] = [f"file:{urllib.parse.quote(path)}?mode=rw"]
        cparams["uri"] = True


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
