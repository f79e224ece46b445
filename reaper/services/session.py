"""The ``[neutron]``, ``[cinder]``, ``[placement]`` and ``[service_user]`` options, as
Nova registers them, and the keystoneauth1 adapters they make.

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

LOG = logging.getLogger(__name__)
CONF = cfg.CONF

# group -> (the service's default service_type, what the reaper does with it)
SERVICES = {
    "neutron": ("network", "delete the ports Nova created for a reclaimed instance and "
                           "unbind its pre-existing ones"),
    "cinder": ("block-storage", "delete a reclaimed instance's volume attachments (or "
                                "terminate the connection and detach old-style ones) and "
                                "delete its delete_on_termination volumes"),
    "placement": ("placement", "delete a reclaimed instance's allocations; remove this "
                               "node's resource providers from an evacuated instance's "
                               "allocations"),
}
SERVICE_USER = "service_user"
DEFAULT_TIMEOUT = 60.0
DEFAULT_INTERFACES = ["internal", "public"]

service_user_opts = [
    cfg.BoolOpt("send_service_user_token", default=False,
                help="Send a service token of the [service_user] account (its auth_type, "
                     "auth_url, username... below) along with every request to Neutron, "
                     "Cinder and Placement, as Nova's [service_user] does. Cinder accepts "
                     "deleting the attachment of an in-use volume and "
                     "os-terminate_connection only from a service (an X-Service-Token "
                     "whose roles include 'service'): without it the volume step of a "
                     "reclaim fails on a recent Cinder. The [service_user] account needs "
                     "the 'service' role."),
]


def _groups_help(group: str) -> str:
    stype, what = SERVICES[group]
    return (f"Reaching the {stype} service (keystoneauth1 options, as in nova.conf "
            f"[{group}]): the reaper uses it to {what}. Without auth_type the service "
            f"is not configured: that step is not done here and stays, with the "
            f"instance's facts, in the reclaim's leftovers (reaper-ctl finish can do "
            f"it from a controller).")


def _adapter_opts(stype: str) -> list[cfg.Opt]:
    opts = ks_loading.get_adapter_conf_options(include_deprecated=False)
    for o in opts:
        if o.dest == "service_type":
            o.default = stype
        elif o.dest == "valid_interfaces":
            o.default = list(DEFAULT_INTERFACES)
    return opts


def _session_opts() -> list[cfg.Opt]:
    opts = ks_loading.get_session_conf_options()
    for o in opts:
        if o.dest == "timeout":
            o.default = DEFAULT_TIMEOUT
            o.help = (f"Seconds a request to the service may take (default "
                      f"{DEFAULT_TIMEOUT:g}; Nova leaves it unset); past it the step "
                      f"fails and is retried in the next pass.")
    return opts


def _auth_opts() -> list[cfg.Opt]:
    """For the sample config: the common auth options and those of the password
    plugins (the ones deployments use), without duplicates."""
    seen: dict[str, cfg.Opt] = {o.dest: o for o in ks_loading.get_auth_common_conf_options()}
    for o in (ks_loading.get_auth_plugin_conf_options("password")
              + ks_loading.get_auth_plugin_conf_options("v3password")):
        # Required only once a plugin is chosen (auth_type): the sample lists them
        # and a reload's fresh ConfigOpts registers them, with no auth configured.
        o.required = False
        # keystoneauth1 registers a plugin's options when it loads the plugin:
        # until then they are not on CONF (reaper.config.validate skips them).
        o.reaper_auth_plugin = True
        seen.setdefault(o.dest, o)
    return list(seen.values())


def register_opts(conf: cfg.ConfigOpts = CONF) -> None:
    """Register every group on ``conf`` (idempotent)."""
    for group, (stype, _what) in SERVICES.items():
        conf.register_group(cfg.OptGroup(group, help=_groups_help(group)))
        ks_loading.register_session_conf_options(conf, group)
        ks_loading.register_auth_conf_options(conf, group)
        ks_loading.register_adapter_conf_options(conf, group, include_deprecated=False)
        conf.set_default("service_type", stype, group=group)
        conf.set_default("valid_interfaces", list(DEFAULT_INTERFACES), group=group)
        conf.set_default("timeout", DEFAULT_TIMEOUT, group=group)
    conf.register_group(cfg.OptGroup(
        SERVICE_USER, help="The service account whose token goes with the reaper's "
                           "requests to Neutron, Cinder and Placement (nova.conf "
                           "[service_user])."))
    conf.register_opts(service_user_opts, group=SERVICE_USER)
    ks_loading.register_session_conf_options(conf, SERVICE_USER)
    ks_loading.register_auth_conf_options(conf, SERVICE_USER)
    # as list_opts (the sample, a reload's fresh ConfigOpts) has it
    conf.set_default("timeout", DEFAULT_TIMEOUT, group=SERVICE_USER)


register_opts(CONF)


def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The groups for oslo-config-generator (reaper.opts)."""
    out = [(group, _session_opts() + _auth_opts() + _adapter_opts(stype))
           for group, (stype, _what) in SERVICES.items()]
    out.append((SERVICE_USER, service_user_opts + _session_opts() + _auth_opts()))
    return out


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
