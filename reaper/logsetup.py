"""Logging set-up shared by the three console scripts.

oslo.log's ``setup`` plus what a service on a compute host needs from it:

- ``--use-journal`` (``[DEFAULT] use_journal``) needs the systemd Python
  bindings (``pip install 'reaper[journal]'``). Without them oslo.log raises a
  RuntimeError with a traceback, and under the unit that is a restart loop; here
  it is one line on stderr and exit 78 (EX_CONFIG), which the unit does not
  restart. With the journal, stderr logging is turned off unless it was asked
  for explicitly: under systemd stderr goes to the journal too, and every line
  would be there twice. When journald does not run (no socket), stderr stays on
  so that nothing is lost silently.
- no colour escapes on stderr unless ``log_color`` asks for them: oslo.log
  releases before that option (the declared floor among them) end every stderr
  line with ``\\033[00m``, which under the unit lands in the journal and in
  whatever reads the output; :func:`_plain_streams` does what newer oslo.log
  does with ``log_color`` off.
- eventlet warns on import, and the reaper's dependencies import it (the OVS
  library, oslo.messaging) although the reaper never uses it (threads only):
  :func:`silence_eventlet` filters exactly that warning and no other.
"""
from __future__ import annotations

import logging as std_logging
import os
import sys
import warnings

from oslo_config import cfg
from oslo_log import handlers as log_handlers
from oslo_log import log as logging

# sysexits.h: a configuration error; the unit's RestartPreventExitStatus.
EX_CONFIG = 78

JOURNAL_SOCKET = "/run/systemd/journal/socket"

# eventlet's import-time EventletDeprecationWarning (a Warning subclass, not a
# DeprecationWarning, so the default filters show it).
_EVENTLET_WARNING = r"\s*Eventlet is deprecated"


def silence_eventlet() -> None:
    """Hide eventlet's import-time deprecation warning, only it. Must run before
    anything imports eventlet (the console-script package does it first)."""
    warnings.filterwarnings("ignore", message=_EVENTLET_WARNING, category=Warning)


class JournalUnavailable(SystemExit):
    """``use_journal`` without the systemd bindings: a configuration error that a
    restart cannot fix (exit 78); the message was printed already."""

    def __init__(self) -> None:
        super().__init__(EX_CONFIG)


def journal_bindings() -> bool:
    """Whether oslo.log can build its JournalHandler (``systemd.journal`` imports)."""
    try:
        from systemd import journal  # noqa: F401
    except ImportError:
        return False
    return True


def _explicit(conf: cfg.ConfigOpts, name: str) -> bool:
    """Whether the operator set ``name`` (command line or a config file)."""
    try:
        where = conf.get_location(name).location
    except (cfg.NoSuchOptError, AttributeError):
        return False
    return where in (cfg.Locations.user, cfg.Locations.command_line)


def setup(conf: cfg.ConfigOpts, project: str, prog: str) -> None:
    """oslo.log's setup for console script ``prog``; raises :class:`JournalUnavailable`
    (a SystemExit, code 78) after printing one line when the journal cannot work."""
    if conf.use_journal:
        if not journal_bindings():
            print(f"{prog}: configuration error: use_journal (--use-journal) needs the "
                  "systemd Python bindings, which are not installed: install them "
                  "(pip install 'reaper[journal]', which builds systemd-python against "
                  "libsystemd-dev) or turn use_journal off", file=sys.stderr)
            raise JournalUnavailable()
        journald = os.path.exists(JOURNAL_SOCKET)
        if journald and not _explicit(conf, "use_stderr"):
            conf.set_override("use_stderr", False)
    logging.setup(conf, project)
    _plain_streams(conf)
    if conf.use_journal and conf.use_stderr and not os.path.exists(JOURNAL_SOCKET):
        logging.getLogger(__name__).warning(
            "use_journal is set but journald does not run here (no %s): logging to "
            "stderr too", JOURNAL_SOCKET)


def _plain_streams(conf: cfg.ConfigOpts) -> None:
    """Replace oslo.log's ColorHandler on the root logger by a plain StreamHandler
    (same stream, formatter, level and filters) unless ``log_color`` is on. Newer
    oslo.log installs that plain handler itself when ``log_color`` is off (its
    default); older releases have no ``log_color`` and always colour, appending a
    reset escape to every line."""
    try:
        if conf.log_color:
            return
    except (cfg.NoSuchOptError, AttributeError):
        pass                            # an oslo.log without the option: never colour
    root = std_logging.getLogger()
    for i, handler in enumerate(root.handlers):
        if isinstance(handler, log_handlers.ColorHandler):
            plain = std_logging.StreamHandler(handler.stream)
            plain.setFormatter(handler.formatter)
            plain.setLevel(handler.level)
            for f in handler.filters:
                plain.addFilter(f)
            root.handlers[i] = plain
