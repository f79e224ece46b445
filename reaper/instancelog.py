"""The ``instance_uuid=`` keyword of oslo.log for a log line about one instance.

oslo.log's logger adapter moves ``instance_uuid`` into the record and its formatter
prints ``[instance: <uuid>] `` before the message (``instance_uuid_format``, in both
``logging_context_format_string`` and ``logging_default_format_string``): the prefix
operators grep Nova's logs for. A teardown's ``instance_uuid`` is not always an
instance: a leak teardown (a VIF prefix, an iSCSI session) carries its resource's
name there, and an ``[instance: vif:tap...]`` prefix would mislead, so only a UUID
gives the keyword; lines that may be about a leak keep naming it in their text.
"""
from __future__ import annotations

import uuid as uuidlib


def kw(value: str | None) -> dict[str, str]:
    """``{"instance_uuid": value}`` when ``value`` is a UUID, else ``{}``."""
    if not value:
        return {}
    try:
        uuidlib.UUID(str(value))
    except ValueError:
        return {}
    return {"instance_uuid": value}
