"""[neutron], [cinder], [placement] and [service_user]: reaching the cloud's services.

Built from keystoneauth1's loading helpers (``keystoneauth1.loading``), as Nova builds
its own sections, so the names, sections and defaults are those of nova.conf; see
reaper.services.session for what the reaper does with them. This is the one leaf
of the package that imports more than oslo.config: keystoneauth1's option lists
are its own (they change with its releases), so they are asked for, not copied.
"""
from __future__ import annotations

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

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
        # until then they are not on CONF.
        o.reaper_auth_plugin = True
        seen.setdefault(o.dest, o)
    return list(seen.values())


def register_opts(conf: cfg.ConfigOpts) -> None:
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



def list_opts() -> list[tuple[str, list[cfg.Opt]]]:
    """The groups for oslo-config-generator (reaper.conf.opts)."""
    out = [(group, _session_opts() + _auth_opts() + _adapter_opts(stype))
           for group, (stype, _what) in SERVICES.items()]
    out.append((SERVICE_USER, service_user_opts + _session_opts() + _auth_opts()))
    return out
