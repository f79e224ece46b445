"""The columns the Nova view reads and the clause of a host's open migrations.

Shared by the view (reaper.nova.view), the change check that hashes exactly what the
view reads (reaper.nova.changes) and the grants derived from them (reaper.nova.grants).
"""
from __future__ import annotations

import sqlalchemy as sa

from reaper.nova import schema as s
from reaper.objects.fields import RELEASED_MIGRATION_STATUSES

INSTANCE_COLS = ("id", "uuid", "host", "node", "vm_state", "task_state", "power_state",
                 "deleted", "deleted_at", "display_name", "project_id", "user_id")
MIGRATION_COLS = ("id", "uuid", "instance_uuid", "source_compute", "dest_compute",
                  "source_node", "dest_node", "status", "migration_type", "deleted")
BDM_COLS = ("id", "instance_uuid", "volume_id", "source_type", "destination_type",
            "device_name", "delete_on_termination", "connection_info", "attachment_id")


def host_migrations_clause(host: str):
    m = s.migrations
    return sa.and_(
        m.c.deleted == 0,
        sa.or_(m.c.source_compute == host, m.c.dest_compute == host),
        # one bound parameter per status, not an expanding list: an expanding list is
        # re-rendered into the statement at every execution (SQLAlchemy's
        # "post-compile"), which costs more than the change check's query itself
        sa.or_(m.c.status.is_(None),
               m.c.status.not_in([sa.literal(x, sa.String) for x in sorted(RELEASED_MIGRATION_STATUSES)])),
    )
