"""The keystoneauth1 adapters of the ``[neutron]``, ``[cinder]``, ``[placement]`` and
``[service_user]`` options (defined in reaper.conf.services, as Nova registers them).

Each service group holds keystoneauth1's session options (``cafile``, ``insecure``,
``timeout``...), its auth options (``auth_type``, ``auth_url``, ``username``...) and
its adapter options (``service_type``, ``valid_interfaces``, ``region_name``,
``endpoint_override``...): the same names, sections and defaults as in nova.conf,
so a deployment tool can write the reaper's sections as it writes Nova's. Two
defaults differ from keystoneauth's, as in Nova: ``valid_interfaces`` is
``internal, public`` and ``service_type`` is the service's (network,
block-storage, placement). One differs from Nova: ``timeout`` is 60 seconds (Nova
leaves it unset: no timeout), so a service that hangs cannot hold a pass forever.

A group without ``auth_type`` is *not configured*: its service steps are not
planned (no call, no journal step) and what they would do stays in the reclaim's
``leftovers``, with the instance's facts, for the operator or ``reaper-ctl finish``
on a controller.

``[service_user] send_service_user_token`` wraps each service's auth in
``keystoneauth1.service_token.ServiceTokenAuthWrapper``: every request then carries
an ``X-Service-Token`` of the ``[service_user]`` account as well. Cinder accepts
deleting the attachment of an in-use volume, or ``os-terminate_connection``, only
from a service (a token whose roles include ``service``).
"""
from __future__ import annotations

import dataclasses
from typing import Any

from keystoneauth1 import loading as ks_loading
from keystoneauth1 import service_token
from oslo_config import cfg
from oslo_log import log as logging

from reaper.conf import CONF
from reaper.conf import services as conf_services

LOG = logging.getLogger(__name__)

# The options (and SERVICES, the groups the reaper knows) are reaper.conf.services'.
SERVICES = conf_services.SERVICES
SERVICE_USER = conf_services.SERVICE_USER


def configured(conf: cfg.ConfigOpts, group: str) -> bool:
    """Whether ``[group]`` names an auth plugin (the reaper then uses the service)."""
    return bool(getattr(conf, group).auth_type)


@dataclasses.dataclass
class ServiceClient:
    """One service's adapter, or why there is none."""
    group: str
    adapter: Any = None             # keystoneauth1.adapter.Adapter
    error: str | None = None        # configured, but the options do not load

    @property
    def configured(self) -> bool:
        return self.adapter is not None or self.error is not None


@dataclasses.dataclass
class Clients:
    """The adapters of the three services (``None`` adapter: not configured)."""
    neutron: ServiceClient
    cinder: ServiceClient
    placement: ServiceClient

    def get(self, group: str) -> ServiceClient:
        return getattr(self, group)


def _service_auth(conf: cfg.ConfigOpts):
    if not conf.service_user.send_service_user_token:
        return None
    auth = ks_loading.load_auth_from_conf_options(conf, SERVICE_USER)
    if auth is None:
        raise ValueError("[service_user] send_service_user_token is set but "
                         "[service_user] has no auth_type")
    return auth


def load_adapter(conf: cfg.ConfigOpts, group: str, service_auth=None):
    """The keystoneauth1 Adapter of ``[group]`` (None when not configured).

    Raises keystoneauth1 / ValueError errors when the options do not load (a plugin
    option missing, an unknown auth_type)."""
    if not configured(conf, group):
        return None
    auth = ks_loading.load_auth_from_conf_options(conf, group)
    if service_auth is not None:
        auth = service_token.ServiceTokenAuthWrapper(user_auth=auth,
                                                     service_auth=service_auth)
    sess = ks_loading.load_session_from_conf_options(conf, group, auth=auth)
    return ks_loading.load_adapter_from_conf_options(conf, group, session=sess, auth=auth)


def clients_from_conf(conf: cfg.ConfigOpts = CONF) -> Clients:
    """An adapter for every configured service. Never raises: a group whose options
    do not load gets an ``error`` (its steps then fail, reported, and retry)."""
    try:
        svc_auth = _service_auth(conf)
        svc_error = None
    except Exception as e:  # noqa: BLE001 - reported per service below
        svc_auth, svc_error = None, f"[service_user]: {e}"
    out = {}
    for group in SERVICES:
        client = ServiceClient(group)
        if configured(conf, group):
            if svc_error is not None:
                client.error = svc_error
            else:
                try:
                    client.adapter = load_adapter(conf, group, svc_auth)
                except Exception as e:  # noqa: BLE001 - a bad section fails its steps only
                    client.error = f"[{group}] options do not load: {type(e).__name__}: {e}"
            if client.error:
                LOG.error("%s", client.error)
        out[group] = client
    return Clients(**out)
