"""The reaper's one write of an evacuation cleanup: mark the migration completed.

Nova's ``_destroy_evacuated_instances`` ends with ``migration.status = 'completed'``
once the source host has destroyed the guest and removed its node from the
instance's allocations: the evacuation is then over for both hosts. Done here only
after the same two things (the host teardown and the Placement step), so a
migration left ``done`` still tells nova-compute's next start to finish it.
"""
from __future__ import annotations

import datetime

import sqlalchemy as sa

from reaper import exception
from reaper.nova import db as nova_db
from reaper.nova import schema as s

EVACUATED = "done"
COMPLETED = "completed"


def complete_migration(engine: sa.Engine, migration_id: int, instance_uuid: str,
                       host: str, now: datetime.datetime) -> str:
    """``status: done -> completed`` (and ``updated_at``, as Migration.save writes it)
    of the evacuation ``migration_id`` of ``instance_uuid`` from ``host``. ONE
    conditional UPDATE. Returns "completed", or "already completed"; raises NovaDBError
    when the row is neither (another status: not ours to change) or the DB fails."""
    if now.tzinfo is not None:
        now = now.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    now = now.replace(microsecond=0)
    m = s.migrations
    ours = sa.and_(m.c.id == migration_id, m.c.instance_uuid == instance_uuid,
                   m.c.source_compute == host, m.c.migration_type == "evacuation",
                   m.c.deleted == 0)
    try:
        with engine.begin() as conn:
            changed = conn.execute(sa.update(m).where(ours, m.c.status == EVACUATED)
                                   .values(status=COMPLETED, updated_at=now)).rowcount
            if changed == 1:
                return "completed"
            status = conn.execute(sa.select(m.c.status).where(ours)).scalar()
    except sa.exc.SQLAlchemyError as exc:
        raise exception.NovaDBError(nova_db.describe_error(exc, engine)) from None
    if status == COMPLETED:
        return "already completed"
    raise exception.NovaDBError(f"migration {migration_id} is not an evacuation of "
                                f"{instance_uuid} from {host} in status 'done' (status "
                                f"{status!r}): not marked completed")
