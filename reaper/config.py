"""Config loading and validation (the options themselves are reaper.conf's)."""
from __future__ import annotations

import os

from oslo_config import cfg
from oslo_log import log as logging

from reaper import exception
from reaper.conf import CONF


def hypervisor_hostname(conf=CONF) -> str:
    """The configured node name; empty means "libvirt's getHostname()" (asked per pass)."""
    return conf.hypervisor_hostname or ""


def load(argv: list[str] | None, project: str = "reaper", default_config_files=None,
         quiet_audit: bool = False, cli_opts: list[cfg.Opt] = ()) -> cfg.ConfigOpts:
    """Parse CLI + config files; oslo.config raises a clear error on malformed input.

    Logs go to stderr so stdout carries only reports (``--format json`` stays
    parseable). ``quiet_audit`` keeps per-finding audit lines out of an
    interactive command's log (they are in the audit log file), and oslo.service's
    "Loading backend" line that importing oslo.messaging logs (the unknown-names
    check imports it after the log is set up).
    """
    logging.register_options(CONF)
    CONF.set_default("use_stderr", True)
    if quiet_audit:
        logging.set_defaults(default_log_levels=logging.get_default_log_levels()
                             + ["reaper.audit=WARN", "oslo_service.backend=WARN"])
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


def registered_options(conf: cfg.ConfigOpts) -> list[tuple[str, cfg.Opt]]:
    """(group, opt) for every option registered on ``conf`` ("DEFAULT" for the
    ungrouped ones): the reaper's (reaper.conf), the program's command-line options and
    whatever its libraries registered (oslo.log...). oslo.config has no public
    iteration that yields the Opt objects: its registry (``_opts``, ``_groups``) is
    read directly."""
    out = [("DEFAULT", info["opt"]) for info in conf._opts.values()]
    for name, group in conf._groups.items():
        out += [(name, info["opt"]) for info in group._opts.values()]
    return out


def validate(conf) -> None:
    """Read every option registered on ``conf`` once so a bad value fails at start-up,
    not mid-pass: the reaper's, and those of the libraries that registered theirs
    (oslo.log's). Options are read from ``conf`` itself: nothing is imported to list
    them."""
    from reaper import conffiles
    for group, opt in registered_options(conf):
        try:
            section = conf if group == "DEFAULT" else conf[group]
            getattr(section, opt.dest)
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
