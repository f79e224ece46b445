"""One instance as Nova's notification code sees it: the row and what hangs off it.

Nova builds its ``instance.delete.*`` notifications from the ``Instance`` object it
is deleting (``nova.notifications.objects.instance.InstancePayload`` and the legacy
``info_from_instance``): the ``instances`` row, its flavor (``instance_extra.flavor``),
metadata, system metadata (image properties, ``locked_reason``), network info cache
and block device mappings. :func:`read` gathers exactly those, in six SELECTs of one
transaction, for :mod:`reaper.nova_notify`.

Rows of the dependent tables are the live ones while the instance is live. Once the
reclaim is finalized the instance and its rows were soft-deleted in one transaction
with the same ``deleted_at``, so those are read instead: the ``delete.end`` event of a
reclaim resumed after a crash still describes the instance as it was, as Nova's
in-memory object does. Never ``connection_info``, ``user_data`` or ``key_data``.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
from typing import Any

import sqlalchemy as sa

from reaper import exception
from reaper.nova import db as nova_db
from reaper.nova import schema as s

# The columns read, per table: reaper.nova.grants grants exactly these (NOTIFY).
INSTANCE_COLS = (
    "id", "uuid", "user_id", "project_id", "reservation_id", "display_name",
    "display_description", "hostname", "host", "node", "os_type", "architecture",
    "availability_zone", "image_ref", "key_name", "kernel_id", "ramdisk_id",
    "instance_type_id", "cell_name", "created_at", "launched_at", "terminated_at",
    "deleted_at", "updated_at", "vm_state", "power_state", "task_state", "progress",
    "locked", "auto_disk_config", "access_ip_v4", "access_ip_v6", "deleted")
EXTRA_COLS = ("instance_uuid", "flavor", "deleted", "deleted_at")
METADATA_COLS = ("id", "instance_uuid", "key", "value", "deleted", "deleted_at")
SYSMETA_COLS = METADATA_COLS
INFO_CACHE_COLS = ("instance_uuid", "network_info", "deleted", "deleted_at")
BDM_COLS = ("id", "instance_uuid", "volume_id", "device_name", "boot_index",
            "delete_on_termination", "tag", "deleted", "deleted_at")


@dataclasses.dataclass(frozen=True)
class InstanceSnapshot:
    """What a delete notification is made of (read-only, plain values)."""
    instance: dict[str, Any]                # INSTANCE_COLS -> value (naive UTC datetimes)
    flavor: dict[str, Any] | None           # the "cur" Flavor's fields, None if unknown
    metadata: dict[str, str]
    system_metadata: dict[str, str | None]
    network_info: list                      # the VIFs of the info cache ([] if none/bad)
    bdms: list[dict[str, Any]]              # volume BDMs (BDM_COLS), in id order

    @property
    def uuid(self) -> str:
        return self.instance["uuid"]


def _cols(table: sa.Table, names) -> list:
    return [table.c[n] for n in names]


def _same_life(table: sa.Table, uuid_col: str, uuid: str, row: dict):
    """The rows of ``table`` that belong to the instance as it is (or was when it was
    destroyed): live rows of a live instance, the rows soft-deleted with a deleted one."""
    where = [table.c[uuid_col] == uuid]
    if not row["deleted"]:
        where.append(table.c.deleted == 0)
    elif row["deleted_at"] is not None:
        where += [table.c.deleted != 0, table.c.deleted_at == row["deleted_at"]]
    else:
        where.append(sa.false())
    return sa.and_(*where)


def flavor_fields(text: str | None) -> dict[str, Any] | None:
    """The current flavor's fields from ``instance_extra.flavor`` (Nova stores
    ``{"cur": <Flavor primitive>, "old": ..., "new": ...}``); None when absent or
    unreadable (a very old instance)."""
    if not text:
        return None
    try:
        doc = json.loads(text)
        cur = doc.get("cur") if isinstance(doc, dict) else None
        data = cur.get("nova_object.data") if isinstance(cur, dict) else None
    except (ValueError, TypeError, RecursionError):
        return None
    return dict(data) if isinstance(data, dict) else None


def _network_info(text: str | None) -> list:
    if not text:
        return []
    try:
        vifs = json.loads(text)
    except (ValueError, TypeError, RecursionError):
        return []
    return [v for v in vifs if isinstance(v, dict)] if isinstance(vifs, list) else []


def read(engine: sa.Engine, uuid: str) -> InstanceSnapshot | None:
    """The instance ``uuid`` (live or soft-deleted; None when there is no row).
    Raises :class:`reaper.exception.NovaDBError` when the DB fails."""
    i_, x, md, sm, ic, b = (s.instances, s.instance_extra, s.instance_metadata,
                            s.instance_system_metadata, s.instance_info_caches,
                            s.block_device_mapping)
    try:
        with engine.connect() as conn:
            found = conn.execute(sa.select(*_cols(i_, INSTANCE_COLS))
                                 .where(i_.c.uuid == uuid)).first()
            if found is None:
                conn.rollback()
                return None
            row = dict(found._mapping)
            extra = conn.execute(sa.select(*_cols(x, EXTRA_COLS))
                                 .where(_same_life(x, "instance_uuid", uuid, row))).first()
            meta = conn.execute(sa.select(*_cols(md, METADATA_COLS))
                                .where(_same_life(md, "instance_uuid", uuid, row))
                                .order_by(md.c.id)).all()
            sysmeta = conn.execute(sa.select(*_cols(sm, SYSMETA_COLS))
                                   .where(_same_life(sm, "instance_uuid", uuid, row))
                                   .order_by(sm.c.id)).all()
            cache = conn.execute(sa.select(*_cols(ic, INFO_CACHE_COLS))
                                 .where(_same_life(ic, "instance_uuid", uuid, row))).first()
            bdms = conn.execute(sa.select(*_cols(b, BDM_COLS))
                                .where(_same_life(b, "instance_uuid", uuid, row),
                                       b.c.volume_id.is_not(None))
                                .order_by(b.c.id)).all()
            conn.rollback()
    except sa.exc.SQLAlchemyError as exc:
        raise exception.NovaDBError(nova_db.describe_error(exc, engine)) from None
    return InstanceSnapshot(
        instance=row,
        flavor=flavor_fields(extra.flavor if extra is not None else None),
        metadata={r.key: r.value for r in meta if r.key is not None},
        system_metadata={r.key: r.value for r in sysmeta if r.key is not None},
        network_info=_network_info(cache.network_info if cache is not None else None),
        bdms=[dict(r._mapping) for r in bdms],
    )


def naive_utc(value: datetime.datetime | None) -> datetime.datetime | None:
    """Nova's columns are naive UTC; an aware value is brought to that form."""
    if value is not None and value.tzinfo is not None:
        value = value.astimezone(datetime.timezone.utc).replace(tzinfo=None)
    return value
