"""The RPC protocol's pure parts: argument validation, what counts as destructive,
caller context, and how reaper-ctl merges per-host results into one exit code."""
from __future__ import annotations

import logging as std_logging
import threading

import pytest

from reaper import exception
from reaper import rpc
from reaper.cmd import ctl
from reaper.rpc import client as rpc_client
from reaper.rpc import server as rpc_server

UUID = "0e7b1b5c-2e1e-4b6f-9a53-5d3f1c1f2a10"
PASS = "req-6f1c2d3e-4b5a-4c7d-8e9f-0a1b2c3d4e5f"


# -- validate ----------------------------------------------------------------------

@pytest.mark.parametrize("method,args,expected", [
    ("audit", {}, {"instance_uuid": None}),
    ("audit", {"instance_uuid": UUID}, {"instance_uuid": UUID}),
    ("audit", {"instance_uuid": UUID.upper()}, {"instance_uuid": UUID}),
    ("audit", {"instance_uuid": f" {UUID}\n"}, {"instance_uuid": UUID}),
    ("audit", {"instance_uuid": UUID.replace("-", "")}, {"instance_uuid": UUID}),
    ("reap", {}, {"instance_uuid": None, "dry_run": None}),
    ("reap", {"dry_run": True}, {"instance_uuid": None, "dry_run": True}),
    ("reclaim", {"dry_run": False, "instance_uuid": UUID},
     {"instance_uuid": UUID, "dry_run": False}),
    ("status", {}, {}),
    ("resume", {}, {}),
    ("pause", {}, {"reason": ""}),
    ("pause", {"reason": "  disk swap  "}, {"reason": "disk swap"}),
    ("approve", {"pass_id": PASS.upper()}, {"pass_id": PASS}),
])
def test_good_arguments_are_normalised(method, args, expected):
    assert rpc.validate(method, args) == expected


@pytest.mark.parametrize("method,args,message", [
    ("audit", {"instance_uuid": "nope"},
     "instance_uuid 'nope' is not a UUID (expected e.g. 0e7b1b5c-2e1e-4b6f-9a53-5d3f1c1f2a10)"),
    ("audit", {"instance_uuid": UUID[:-1]}, "is not a UUID"),
    ("audit", {"instance_uuid": "../../etc"}, "is not a UUID"),
    ("audit", {"instance_uuid": 7}, "instance_uuid must be a UUID string, not int"),
    ("audit", {"instance_uuid": {"a": 1}}, "instance_uuid must be a UUID string, not dict"),
    ("reap", {"dry_run": "false"}, "dry_run must be true, false or absent, not 'false'"),
    ("reap", {"dry_run": 1}, "dry_run must be true, false or absent, not 1"),
    ("audit", {"dry_run": True}, "audit does not take dry_run (it takes instance_uuid)"),
    ("reap", {"force": True, "all": 1}, "reap does not take all, force"),
    ("status", {"host": "x"}, "status does not take host (it takes no arguments)"),
    ("approve", {}, "approve needs a pass_id"),
    ("approve", {"pass_id": ""}, "pass_id '' is not a pass id"),
    ("approve", {"pass_id": UUID}, "is not a pass id (req-<uuid>"),
    ("approve", {"pass_id": f"{PASS}; rm -rf /"}, "is not a pass id"),
    ("approve", {"pass_id": ["x"]}, "pass_id must be a string, not list"),
    ("pause", {"reason": "a\nb"}, "reason must be one line of printable text"),
    ("pause", {"reason": "x" * 256}, "reason is 256 characters long; at most 255"),
    ("pause", {"reason": 5}, "reason must be a string, not int"),
    ("destroy_everything", {}, "unknown method 'destroy_everything'; one of audit, reap"),
])
def test_bad_arguments_say_what_is_wrong(method, args, message):
    with pytest.raises(exception.BadArgument) as e:
        rpc.validate(method, args)
    assert message in str(e.value)


def test_long_bad_values_are_shortened_in_messages():
    with pytest.raises(exception.BadArgument) as e:
        rpc.validate("audit", {"instance_uuid": "z" * 10000})
    assert len(str(e.value)) < 200


# -- destructive ---------------------------------------------------------------------

@pytest.mark.parametrize("method,args,destructive", [
    ("audit", {"instance_uuid": None}, False),
    ("status", {}, False),
    ("pause", {"reason": ""}, False),
    ("reap", {"dry_run": None}, True),       # absent: the host's own dry_run decides
    ("reap", {"dry_run": False}, True),
    ("reap", {"dry_run": True}, False),
    ("reclaim", {"dry_run": None}, True),
    ("reclaim", {"dry_run": True}, False),
    ("approve", {"pass_id": PASS}, True),
    ("resume", {}, True),
])
def test_what_needs_allow_remote_reap(method, args, destructive):
    assert rpc.is_destructive(method, args) is destructive


def test_every_method_has_a_validator_for_each_argument():
    for method, names in rpc.METHODS.items():
        assert set(rpc.validate(method, {} if method != "approve" else {"pass_id": PASS})) \
            == set(names)
    for method in rpc.METHODS:
        assert callable(getattr(rpc_server.ReaperEndpoint, method))


def test_error_replies_are_recognised():
    reply = rpc.error_reply(rpc.REFUSED, "no", "h1")
    assert rpc.is_error(reply) and reply == {"error": {"code": "refused", "message": "no",
                                                       "host": "h1"}}
    assert not rpc.is_error({"errors": ["a pass error is a report, not an error reply"]})
    assert not rpc.is_error({"error": "a string is not an error reply"})
    assert not rpc.is_error(None)


# -- caller context ----------------------------------------------------------------

def test_caller_prefers_names_and_keeps_no_token():
    ctxt = rpc_client.make_context(user="alice", project="ops", request_id="req-1")
    assert ctxt["auth_token"] is None
    assert rpc_server.caller_of(ctxt) == {"request_id": "req-1", "user": "alice",
                                          "project": "ops"}
    assert rpc_server.caller_of({"request_id": "req-2", "user": "u-id", "project_id": "p-id"}) \
        == {"request_id": "req-2", "user": "u-id", "project": "p-id"}
    assert rpc_server.caller_of({}) == {"request_id": None}
    assert rpc_server.caller_of("not a dict") == {"request_id": None}


def test_make_context_generates_a_request_id(monkeypatch):
    monkeypatch.setenv("OS_USERNAME", "bob")
    monkeypatch.setenv("OS_PROJECT_NAME", "admin")
    a, b = rpc_client.make_context(), rpc_client.make_context()
    assert a["request_id"].startswith("req-") and a["request_id"] != b["request_id"]
    assert (a["user_name"], a["project_name"]) == ("bob", "admin")


# -- the RabbitMQ driver's connection pool --------------------------------------------

def _conf(tmp_path, body: str = ""):
    from oslo_config import cfg
    path = tmp_path / "reaper-ctl.conf"
    path.write_text(body)
    conf = cfg.ConfigOpts()
    conf(["--config-file", str(path)], default_config_files=[], default_config_dirs=[])
    return conf


def test_a_client_for_a_fan_out_sizes_the_connection_pool(tmp_path):
    """A fan-out publishes over a few connections, not one per call in flight, and
    the driver and the client load on that conf (nothing connects yet). At the
    declared oslo.messaging floor this failed twice: it lists rpc_conn_pool_size
    with the [DEFAULT] options, not in [oslo_messaging_rabbit] where its driver
    reads it ("no such option"), and it has no get_rpc_client."""
    conf = _conf(tmp_path)
    with rpc_client.ReaperClient(conf, url="rabbit://guest:guest@127.0.0.1:1/",
                                 parallel=150, context={}) as client:
        assert client.transport is not None
    assert conf.oslo_messaging_rabbit.rpc_conn_pool_size == rpc_client.SEND_CONNECTIONS


def test_a_client_for_one_call_keeps_the_drivers_minimum_pool(tmp_path):
    conf = _conf(tmp_path)
    with rpc_client.ReaperClient(conf, url="rabbit://guest:guest@127.0.0.1:1/",
                                 parallel=1, context={}):
        pass
    rabbit = conf.oslo_messaging_rabbit
    assert rabbit.rpc_conn_pool_size == rabbit.conn_pool_min_size == 2


def test_a_configured_connection_pool_stays(tmp_path):
    conf = _conf(tmp_path, "[oslo_messaging_rabbit]\nrpc_conn_pool_size = 400\n")
    rpc_client._size_connection_pool(conf, 4)
    assert conf.oslo_messaging_rabbit.rpc_conn_pool_size == 400


def test_waiting_for_a_pooled_connection_is_not_warned_about(caplog):
    """Calls beyond the pool's size wait for a free connection by design; the
    driver's "pool limit exceeded" warning would print once per waiting call."""
    from oslo_messaging._drivers import pool

    class Pool(pool.Pool):
        def create(self, retry=None):
            return object()

    p = Pool(max_size=1, min_size=0, ttl=60)
    first = p.get()
    threading.Timer(0.2, p.put, args=(first,)).start()
    with caplog.at_level(std_logging.WARNING, logger="oslo.messaging._drivers.pool"):
        assert p.get() is first
    assert not [r for r in caplog.records if "pool limit" in r.getMessage()]


def test_ctl_reads_the_nova_db_options_only_for_all(tmp_path):
    """[database] comes with SQLAlchemy; --host and --hosts-file never read it."""
    import os
    import subprocess
    import sys

    hosts = tmp_path / "hosts"
    hosts.write_text("cmp-1\n")
    conf = tmp_path / "ctl.conf"
    conf.write_text("[DEFAULT]\ntransport_url = rabbit://guest:guest@127.0.0.1:1/\n"
                    "[database]\nconnection = sqlite:////nonexistent/nova.sqlite\n")
    code = (
        "import sys\n"
        "from reaper.cmd import ctl\n"
        f"conf = ctl._load_conf(['--config-file', {str(conf)!r}, '--hosts-file', "
        f"{str(hosts)!r}, 'audit'])\n"
        "assert ctl.select_hosts(conf) == ['cmp-1']\n"
        "print('sqlalchemy' in sys.modules)\n"
        f"conf = ctl._load_conf(['--config-file', {str(conf)!r}, '--all', 'audit'])\n"
        "ctl._register_database_opts(conf)\n"
        "print(conf.database.connection)\n")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=root), timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["False", "sqlite:////nonexistent/nova.sqlite"]


# -- reaper-ctl: arguments and the merged exit code -----------------------------------

class Sub:
    def __init__(self, **kw):
        self.__dict__.update(kw)


def test_ctl_call_args():
    assert ctl.call_args("audit", Sub(instance=UUID.upper())) == {"instance_uuid": UUID}
    assert ctl.call_args("reap", Sub(instance=None, dry_run=True)) == {"dry_run": True}
    assert ctl.call_args("reap", Sub(instance=None, dry_run=False)) == {}
    assert ctl.call_args("pause", Sub(reason="")) == {}
    assert ctl.call_args("pause", Sub(reason="why")) == {"reason": "why"}
    assert ctl.call_args("approve", Sub(pass_id=PASS)) == {"pass_id": PASS}
    assert ctl.call_args("status", Sub()) == {}
    with pytest.raises(exception.BadArgument):
        ctl.call_args("approve", Sub(pass_id="x"))


def ok(host, code=None):
    reply = {"host": host} if code is None else {"host": host, "summary": {"exit_code": code}}
    return rpc_client.HostResult(host, rpc_client.OK, reply=reply)


def err(host):
    return rpc_client.HostResult(host, rpc_client.ERROR, code=rpc.REFUSED, message="no")


def down(host):
    return rpc_client.HostResult(host, rpc_client.UNREACHABLE, code=rpc_client.TIMEOUT,
                                 message="no answer within 5s")


@pytest.mark.parametrize("method,results,code", [
    ("audit", [ok("a", 0), ok("b", 0)], ctl.EXIT_OK),
    ("audit", [ok("a", 0), ok("b", 3)], ctl.EXIT_FINDINGS),
    ("reap", [ok("a", 3), ok("b", 4)], ctl.EXIT_ACTIONS),
    ("reap", [ok("a", 4), ok("b", 5)], ctl.EXIT_GUARD),
    ("reap", [ok("a", 5), down("b")], ctl.EXIT_UNREACHABLE),
    ("reap", [ok("a", 1), down("b")], ctl.EXIT_ERROR),
    ("reap", [err("a"), down("b"), ok("c", 5)], ctl.EXIT_ERROR),
    ("status", [ok("a"), ok("b")], ctl.EXIT_OK),
    ("status", [ok("a"), down("b")], ctl.EXIT_UNREACHABLE),
    ("pause", [err("a")], ctl.EXIT_ERROR),
    ("status", [], ctl.EXIT_ERROR),
])
def test_overall_exit_code(method, results, code):
    assert ctl.overall_exit_code(method, results) == code


def test_merged_report_and_table():
    results = [ok("a", 3), err("b"), down("c")]
    rep = ctl.merged_report("audit", results, "req-x", 1.23456)
    assert rep == {"method": "audit", "request_id": "req-x",
                   "hosts": {"a": {"host": "a", "summary": {"exit_code": 3}}},
                   "unreachable": ["c"], "unreachable_reasons": {"c": "no answer within 5s"},
                   "errors": {"b": {"code": "refused", "message": "no"}},
                   "exit_code": ctl.EXIT_ERROR, "elapsed": 1.235}
    lines = ctl.render_table("audit", results, "req-x", 1.2).splitlines()
    assert lines[0].split() == ["HOST", "STATE", "FINDINGS", "ACTIONS", "GUARDS", "EXIT",
                                "DETAIL"]
    assert lines[1].split()[:2] == ["a", "ok"] and lines[1].split()[5] == "3"
    assert lines[2].split()[:2] == ["b", "ERROR"] and lines[2].endswith("refused: no")
    assert lines[3].split()[:2] == ["c", "UNREACHABLE"]
    assert lines[3].endswith("no answer within 5s")
    assert lines[-1] == ("audit: 3 hosts, 1 ok, 1 error, 1 unreachable (c); 1.20s; "
                         "request req-x; exit 1")


def test_hosts_file(tmp_path):
    p = tmp_path / "hosts"
    p.write_text("# the fleet\ncmp-1\n  cmp-2  # rack 4\n\ncmp-1\n")
    assert ctl.read_hosts_file(str(p)) == ["cmp-1", "cmp-2"]
