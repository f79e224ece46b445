"""[DEFAULT] options shared by every part of the agent, and config loading."""
from __future__ import annotations

import os
import socket

from oslo_config import cfg
from oslo_log import log as logging

from reaper import exception

CONF = cfg.CONF

default_opts = [
    cfg.StrOpt("host", default=socket.gethostname(), sample_default="<current_hostname>",
               help="Name of this compute host exactly as nova-compute's [DEFAULT] host "
                    "(instances.host, compute_nodes.host)."),
    cfg.StrOpt("hypervisor_hostname", default="",
               help="This host's node name as nova-compute reports it "
                    "(compute_nodes.hypervisor_hostname); the host identity check looks for a "
                    "compute_nodes row with [DEFAULT] host and this node name. Empty (the "
                    "default): ask libvirt, as nova-compute's libvirt driver does, which names "
                    "its node after the libvirt connection's getHostname() (often the FQDN, "
                    "and not [DEFAULT] host); asked on every pass, so a libvirt that does not "
                    "answer refuses the pass until it does. Set it only when the node is "
                    "named otherwise (another virt driver, or an operator's override)."),
    cfg.StrOpt("instances_path", default="/var/lib/nova/instances",
               help="Where nova-compute keeps instance directories (nova-compute's "
                    "instances_path). Must be an absolute path; a relative one is refused "
                    "at start-up. It may be a symlink or spelled with '//' or '..': the "
                    "reaper resolves it, and every file path a libvirt domain uses, to "
                    "real paths before deciding which directory a domain uses."),
    cfg.StrOpt("state_path", default="/var/lib/reaper",
               help="Where the reaper keeps its state DB (observations, journal, approvals)."),
    cfg.StrOpt("instance_name_template", default="instance-%08x",
               help="Nova's instance_name_template; a domain named by it counts as Nova's."),
]

CONF.register_opts(default_opts)


def hypervisor_hostname(conf=CONF) -> str:
    """The configured node name; empty means "libvirt's getHostname()" (asked per pass)."""
    return conf.hypervisor_hostname or ""


def load(argv: list[str] | None, project: str = "reaper", default_config_files=None,
         quiet_audit: bool = False, cli_opts: list[cfg.Opt] = ()) -> cfg.ConfigOpts:
    """Parse CLI + config files; oslo.config raises a clear error on malformed input.

    Logs go to stderr so stdout carries only reports (``--format json`` stays
    parseable). ``quiet_audit`` keeps per-finding audit lines out of an
    interactive command's log (they are in the audit log file).
    """
    logging.register_options(CONF)
    CONF.set_default("use_stderr", True)
    if quiet_audit:
        logging.set_defaults(default_log_levels=logging.get_default_log_levels()
                             + ["reaper.audit=WARN"])
    parse(CONF, argv or [], cli_opts, project=project,
          default_config_files=default_config_files)
    validate(CONF)
    return CONF


def parse(conf: cfg.ConfigOpts, argv: list[str], cli_opts: list[cfg.Opt] = (), **kw) -> None:
    """``conf(argv, **kw)`` with ``--version`` (the package's) and a clear error for a
    command-line option set to a bad value in a file: oslo.config exits by itself on
    those (``argument --use_journal: Invalid...``, no file named); here that is a
    :class:`BadValue` naming the file and what is allowed. ``cli_opts``: the program's
    own command-line options (looked for in [DEFAULT]).

    That exit is ``SystemExit(1)`` in current oslo.config, but a bare ``SystemExit``
    (code None: exit status 0, as if all went well) in older ones such as the
    declared floor: both are taken as that error, so a bad value never exits 0."""
    from reaper import version_string
    try:
        conf(argv, version=version_string(), **kw)
    except SystemExit as e:
        if e.code not in (1, None):
            raise                       # --help, --version (0), usage errors (2)
        from reaper import conffiles
        described = conffiles.first_bad_value(conf, list(argv), list(cli_opts))
        if described is None:
            raise SystemExit(1) from None
        raise exception.BadValue(described) from None


def validate(conf) -> None:
    """Read every option once so a bad value fails at start-up, not mid-pass: the
    reaper's, and oslo.log's that ``conf`` registered."""
    from reaper import conffiles, opts
    listed = [(group.name if isinstance(group, cfg.OptGroup) else group, opt, False)
              for group, group_opts in opts.list_opts() for opt in group_opts]
    listed += [(group, opt, True) for group, opt in conffiles.namespace_opts("oslo.log")]
    for group, opt, optional in listed:
        try:
            section = conf if group == "DEFAULT" else getattr(conf, group)
            getattr(section, opt.dest)
        except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
            if not (optional or getattr(opt, "reaper_auth_plugin", False)):
                raise
            # oslo.log's, not registered (a reload's conf); an auth plugin's options
            # of [neutron]... (keystoneauth1 registers them when it loads the plugin)
            continue
        except (cfg.ConfigFileValueError, cfg.ConfigSourceValueError) as e:
            raise exception.BadValue(conffiles.describe_bad_value(conf, group, opt, e)) from None
    _check_instances_path(conf.instances_path)


def warn_unknown_names(conf, log=None) -> list[str]:
    """A warning per section or option of the config files that nothing reads (a
    misspelled name is otherwise ignored without a word); never fatal."""
    from reaper import conffiles
    log = log or logging.getLogger(__name__)
    try:
        lines = conffiles.unknown_names(conf)
    except Exception:  # a warning, never a reason not to start
        log.debug("cannot check the config files for unknown names", exc_info=True)
        return []
    for line in lines:
        log.warning("%s", line)
    return lines


def error_text(e: BaseException) -> str:
    """One line for a configuration error, without oslo.config's internals."""
    from reaper import conffiles
    return conffiles.clean_message(str(e))


def _check_instances_path(path: str) -> None:
    """A relative instances_path would be resolved against whatever the working
    directory happens to be, and compared with the absolute paths libvirt reports."""
    if not os.path.isabs(path):
        raise ValueError(f"[DEFAULT] instances_path must be an absolute path, not {path!r}")
