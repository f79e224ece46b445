"""InstanceFacts from what the Nova DB says (pure: the planner calls it).

The ports come from the instance's network_info cache (each VIF's ``id`` and
``preserve_on_delete``, as Nova's ``_get_preexisting_port_ids`` reads them), the
volumes from its live volume BDMs. Of a BDM's ``connection_info`` only the
``connector`` Nova stored there is kept (initiator, host, ip...): never the rest,
which can hold CHAP secrets.
"""
from __future__ import annotations

import json
from typing import Iterable

from reaper.objects.nova import BdmRow, InfoCacheRow
from reaper.services import InstanceFacts, PortFact, VolumeFact


def ports_from_network_info(text: str | None) -> tuple[tuple[PortFact, ...], str]:
    """(ports, "ok" | "missing" | "unparsable")."""
    if text is None or not text.strip():
        return (), "missing"
    try:
        vifs = json.loads(text)
    except (ValueError, TypeError, RecursionError, MemoryError):
        return (), "unparsable"
    if not isinstance(vifs, list):
        return (), "unparsable"
    if not vifs:
        return (), "missing"
    ports, bad = [], False
    for vif in vifs:
        if isinstance(vif, dict) and isinstance(vif.get("id"), str) and vif["id"]:
            ports.append(PortFact(vif["id"], vif.get("preserve_on_delete") is True))
        else:
            bad = True
    return tuple(ports), "unparsable" if bad else "ok"


def connector_of(connection_info: str | None) -> dict | None:
    """The host connector Nova stored in an old-style BDM's connection_info."""
    if not connection_info:
        return None
    try:
        info = json.loads(connection_info)
    except (ValueError, TypeError, RecursionError, MemoryError):
        return None
    conn = info.get("connector") if isinstance(info, dict) else None
    if not isinstance(conn, dict):
        return None
    # Only what an os-brick connector holds (initiator, host, ip, wwpns, nqn...: flat
    # values or lists of them); no nested structure and no key that could name a
    # secret. The facts go into audit records and notifications.
    out = {k: v for k, v in conn.items()
           if isinstance(k, str) and not any(w in k.lower() for w in _SECRET_WORDS)
           and (_flat(v) or (isinstance(v, list) and all(_flat(x) for x in v)))}
    if len(json.dumps(out)) > MAX_CONNECTOR_CHARS:
        return None         # not a connector as os-brick makes one: not kept
    return out


# Key fragments never kept from a stored connector.
_SECRET_WORDS = ("password", "secret", "auth", "chap", "token", "credential", "key")
# A connector os-brick builds is a few hundred characters (FC: some WWPNs more).
MAX_CONNECTOR_CHARS = 4096


def _flat(v) -> bool:
    return v is None or isinstance(v, (str, int, float, bool))


def volumes_from_bdms(bdms: Iterable[BdmRow]) -> tuple[VolumeFact, ...]:
    out = []
    for b in bdms:
        if b.destination_type != "volume" or not b.volume_id:
            continue
        out.append(VolumeFact(b.volume_id, b.attachment_id or None,
                              bool(b.delete_on_termination),
                              None if b.attachment_id else connector_of(b.connection_info)))
    return tuple(out)


def instance_facts(uuid: str, host: str | None, node: str | None, *,
                   cache: InfoCacheRow | None = None, bdms: Iterable[BdmRow] = (),
                   node_uuid: str | None = None,
                   migration_id: int | None = None) -> InstanceFacts:
    ports, state = ports_from_network_info(cache.network_info if cache else None)
    return InstanceFacts(uuid=uuid, host=host, node=node, node_uuid=node_uuid,
                         ports=ports, network_info=state,
                         volumes=volumes_from_bdms(b for b in bdms
                                                   if b.instance_uuid == uuid),
                         migration_id=migration_id)
