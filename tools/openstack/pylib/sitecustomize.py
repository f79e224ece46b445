"""SQLite writers queue for the lock instead of failing (test services only).

The test stack's services keep their databases in SQLite files, and cinder-api,
cinder-scheduler and cinder-volume share one. oslo.db opens every transaction
with a deferred ``BEGIN``: a transaction that reads and then writes fails at
once with "database is locked", without waiting for the busy timeout, when
another process committed in between. ``BEGIN IMMEDIATE`` takes the write lock
up front, so the second writer waits (up to the URL's ``?timeout=``) instead.

tools/openstack/start.sh puts this directory on the services' PYTHONPATH and
sets REAPER_OS_SQLITE_IMMEDIATE=1; without that variable this module does
nothing (so the venv's other programs do not pay for importing SQLAlchemy).
"""
import os

if os.environ.get("REAPER_OS_SQLITE_IMMEDIATE") == "1":
    try:
        import sqlalchemy
        from sqlalchemy import event
    except ImportError:          # not a service of the test stack
        sqlalchemy = None

    if sqlalchemy is not None:
        def _begin_immediate(conn):
            # oslo.db's own "begin" listener emits a plain BEGIN unless its
            # marker says a transaction is open: set the marker so it does not.
            if conn.dialect.name != "sqlite" or "in_transaction" in conn.info:
                return
            conn.exec_driver_sql("BEGIN IMMEDIATE")
            conn.info["in_transaction"] = True

        def _end(conn):
            conn.info.pop("in_transaction", None)

        # Class-level listeners: every Engine created later gets them, before
        # the per-engine listeners oslo.db adds.
        event.listen(sqlalchemy.engine.Engine, "begin", _begin_immediate)
        event.listen(sqlalchemy.engine.Engine, "commit", _end)
        event.listen(sqlalchemy.engine.Engine, "rollback", _end)
