"""This node's name as Nova names it: read from libvirt unless configured (read only).

nova-compute's libvirt driver names its compute node (``compute_nodes.
hypervisor_hostname``) after the libvirt connection's ``getHostname()``, which is
often not ``[DEFAULT] host`` (an FQDN against a short name, or a ``host`` set by the
deployment tool). The host identity guard needs that exact name; asking libvirt the
way nova-compute does is the only default that matches it.
"""
from __future__ import annotations

from oslo_log import log as logging

LOG = logging.getLogger(__name__)


def node_name(conn, configured: str | None) -> tuple[str | None, str]:
    """(node name, where it came from) or (None, why it is unknown). Never raises."""
    if configured:
        return configured, "[DEFAULT] hypervisor_hostname"
    if conn is None:
        return None, ("[DEFAULT] hypervisor_hostname is empty and libvirt is unreachable, "
                      "so its getHostname() cannot be asked")
    try:
        name = conn.getHostname()
    except Exception as e:  # noqa: BLE001 - libvirtError, or a closed connection
        LOG.warning("libvirt getHostname() failed: %s", e)
        return None, f"libvirt getHostname() failed: {e}"
    if not name:
        return None, "libvirt getHostname() returned nothing"
    return name, "libvirt getHostname()"
