"""reaper.logsetup: --use-journal's handlers and stderr, eventlet's warning filtered and
no other. Each case runs in a subprocess of its own (logging and warnings are
process-wide)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap

import pytest

from tests.conftest import service_unavailable

ENV = dict(os.environ, PYTHONPATH=os.getcwd())


def run(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, env=ENV, timeout=120)


def test_eventlet_warning_is_filtered_and_no_other():
    r = run("""
        import warnings
        import reaper.cmd                    # what every console script imports first
        import eventlet                      # as ovs.poller and oslo.messaging do
        warnings.warn("fmlogs-other-warning", UserWarning)
        warnings.warn("fmlogs-deprecated", DeprecationWarning)   # shown in __main__
        warnings.warn("fmlogs-future", FutureWarning)
    """)
    assert r.returncode == 0, r.stderr
    assert "Eventlet is deprecated" not in r.stderr
    for text in ("fmlogs-other-warning", "fmlogs-deprecated", "fmlogs-future"):
        assert text in r.stderr


def test_without_the_filter_eventlet_warns():
    """The warning the filter removes is really there (eventlet still warns)."""
    r = run("import eventlet")
    assert "Eventlet is deprecated" in r.stderr


_SETUP = """
    import logging, sys
    from oslo_config import cfg
    from oslo_log import handlers, log
    from reaper import logsetup
    logsetup.JOURNAL_SOCKET = sys.argv[1]
    conf = cfg.ConfigOpts()
    log.register_options(conf)
    conf.set_default("use_stderr", True)         # as reaper.config.load does
    conf(sys.argv[2:], project="reaper-test")
    logsetup.setup(conf, "reaper", "reaper-test")
    root = logging.getLogger()
    print(sorted(type(h).__name__ for h in root.handlers))
    """


@pytest.fixture
def bindings():
    """systemd-python, the journal extra (tools/install-deps.sh installs it)."""
    try:
        from systemd import journal  # noqa: F401
    except ImportError as e:
        service_unavailable("systemd-python (pip install -e '.[journal]')", e)


@pytest.fixture
def journald_socket(tmp_path, bindings):
    """A socket where journald's would be (only its existence is looked at)."""
    path = str(tmp_path / "socket")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    yield path
    s.close()


def test_with_journald_the_journal_replaces_stderr(journald_socket):
    r = run(_SETUP, journald_socket, "--use-journal")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['OSJournalHandler']" and r.stderr == ""


def test_stderr_asked_for_is_kept_with_the_journal(journald_socket, tmp_path):
    conf = tmp_path / "reaper.conf"
    conf.write_text("[DEFAULT]\nuse_stderr = true\n")
    r = run(_SETUP, journald_socket, "--use-journal", "--config-file", str(conf))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['OSJournalHandler', 'StreamHandler']"


def test_without_journald_stderr_stays_and_says_why(tmp_path, bindings):
    r = run(_SETUP, str(tmp_path / "no-socket"), "--use-journal")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['OSJournalHandler', 'StreamHandler']"
    assert "journald does not run here" in r.stderr


def test_without_bindings_one_line_and_exit_78(tmp_path):
    r = run('import sys; sys.modules["systemd"] = None\n' + textwrap.dedent(_SETUP),
            str(tmp_path / "no-socket"), "--use-journal")
    assert r.returncode == 78 and r.stdout == ""
    assert r.stderr.startswith("reaper-test: configuration error: use_journal")
    assert len(r.stderr.splitlines()) == 1 and "Traceback" not in r.stderr


_WARN = textwrap.dedent(_SETUP) + 'log.getLogger("reaper.test").warning("fmlogs-plain")\n'


def test_stderr_lines_carry_no_colour_escapes(tmp_path):
    """oslo.log releases without ``log_color`` (the declared floor among them) ended
    every stderr line with a colour reset escape, which the journal (the unit's
    stderr) and anything reading the output got too."""
    r = run(_WARN, str(tmp_path / "no-socket"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['StreamHandler']"
    (line,) = [x for x in r.stderr.splitlines() if "fmlogs-plain" in x]
    assert line.endswith(" fmlogs-plain") and "\x1b" not in r.stderr


def test_log_color_asked_for_is_kept(tmp_path):
    from oslo_config import cfg
    from oslo_log import log
    registered = cfg.ConfigOpts()
    log.register_options(registered)
    if "log_color" not in registered:
        pytest.skip("this oslo.log has no log_color option (it always colours)")
    conf = tmp_path / "reaper.conf"
    conf.write_text("[DEFAULT]\nlog_color = true\n")
    r = run(_WARN, str(tmp_path / "no-socket"), "--config-file", str(conf))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "['ColorHandler']"
    (line,) = [x for x in r.stderr.splitlines() if "fmlogs-plain" in x]
    assert line.endswith("\x1b[00m")
