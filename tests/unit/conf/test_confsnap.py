"""The configuration snapshot: read-only, built from a fresh parse of the same files,
and a running policy that keeps what no reloaded option moved."""
from __future__ import annotations

import dataclasses

import pytest
from oslo_config import cfg

from reaper import confsnap
from reaper.conf import opts
from reaper import policy as policy_mod
from reaper.objects.fields import Action, Classification


def conf_with(tmp_path, files: dict[str, str], config_dir: dict[str, str] | None = None):
    conf = cfg.ConfigOpts()
    for group, group_opts in opts.list_opts():
        conf.register_opts(list(group_opts), group=None if group == "DEFAULT" else group)
    args = []
    for name, body in files.items():
        (tmp_path / name).write_text(body)
        args += ["--config-file", str(tmp_path / name)]
    if config_dir is not None:
        d = tmp_path / "conf.d"
        d.mkdir()
        for name, body in config_dir.items():
            (d / name).write_text(body)
        args += ["--config-dir", str(d)]
    conf(args, project="reaper-test", default_config_files=[])
    return conf


def test_the_snapshot_is_read_only_and_shaped_like_a_conf(tmp_path):
    conf = conf_with(tmp_path, {"a.conf": "[reaper]\ndry_run = true\n"})
    snap = confsnap.take(conf)
    assert snap.conf.reaper.dry_run is True and snap.policy.dry_run is True
    assert snap.get("reaper", "dry_run") is True and snap.conf.host == conf.host
    with pytest.raises(AttributeError):
        _ = snap.conf.reaper.no_such_option
    with pytest.raises(AttributeError):
        snap.conf.reaper.dry_run = False
    with pytest.raises(TypeError):
        snap.values["reaper.dry_run"] = False                       # a mappingproxy
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.policy = None


def test_a_reread_sees_every_file_and_the_config_dir_and_never_touches_conf(tmp_path):
    conf = conf_with(tmp_path, {"a.conf": "[reaper]\ndry_run = false\n",
                                "b.conf": "[reaper]\ngrace_seconds = 10\n"},
                     config_dir={"50-rpc.conf": "[rpc]\nallow_remote_reap = false\n"})
    running = confsnap.take(conf)
    (tmp_path / "b.conf").write_text("[reaper]\ngrace_seconds = 20\n")
    (tmp_path / "conf.d" / "50-rpc.conf").write_text("[rpc]\nallow_remote_reap = true\n")
    out = confsnap.reread(running, conf)
    assert out.changed == {"reaper.grace_seconds": [10, 20],
                           "rpc.allow_remote_reap": [False, True]}
    assert out.snapshot.policy.grace_seconds == 20 and out.snapshot.rpc.allow_remote_reap
    assert conf.reaper.grace_seconds == 10 and conf.rpc.allow_remote_reap is False


@pytest.mark.parametrize("body", [
    pytest.param("[reaper]\ngrace_seconds = -1\n", id="below-min"),
    pytest.param("[reaper]\nevacuated_action = nuke\n", id="not-a-choice"),
    pytest.param("[rpc]\nallow_remote_reap = maybe\n", id="not-a-bool"),
    pytest.param("[reaper\ngrace_seconds = 1\n", id="not-ini"),
])
def test_a_bad_file_raises_before_anything_is_built(tmp_path, body):
    conf = conf_with(tmp_path, {"a.conf": ""})
    running = confsnap.take(conf)
    (tmp_path / "a.conf").write_text("[rpc]\nallow_remote_reap = true\n" + body)
    with pytest.raises(cfg.Error):
        confsnap.reread(running, conf)


def test_a_deleted_file_is_refused(tmp_path):
    conf = conf_with(tmp_path, {"a.conf": ""})
    running = confsnap.take(conf)
    (tmp_path / "a.conf").unlink()
    with pytest.raises(cfg.ConfigFilesNotFoundError):
        confsnap.reread(running, conf)


def test_the_running_policy_keeps_what_no_option_moved(tmp_path):
    """An agent built with its own Policy (another host name, an action set by code)
    keeps it across a reload; only the options the file changed move."""
    conf = conf_with(tmp_path, {"a.conf": ""})
    own = dataclasses.replace(
        policy_mod.from_conf(conf), host="cmp-17", hypervisor_hostname="cmp-17.example",
        actions={**policy_mod.default_actions(), Classification.ORPHAN_DIR: Action.LOG})
    running = confsnap.take(conf, own)
    (tmp_path / "a.conf").write_text("[reaper]\nevacuated_action = log\nmax_destroy_fraction = 0.2\n")
    pol = confsnap.reread(running, conf).snapshot.policy
    assert (pol.host, pol.hypervisor_hostname) == ("cmp-17", "cmp-17.example")
    assert pol.action_for(Classification.ORPHAN_DIR) is Action.LOG
    assert pol.action_for(Classification.EVACUATED) is Action.LOG
    assert pol.max_destroy_fraction == 0.2


def _another_value(opt: cfg.Opt) -> str:
    """A valid value of ``opt`` other than its default, as a config file spells it."""
    t = opt.type
    if isinstance(opt, cfg.BoolOpt):
        return str(not opt.default).lower()
    if getattr(t, "choices", None):
        return next(c for c in t.choices if c != opt.default)
    if isinstance(opt, (cfg.IntOpt, cfg.FloatOpt)):
        d = opt.default
        steps = (d + 1, d - 1) if isinstance(opt, cfg.IntOpt) else (d + 0.5, d / 2, d - 0.5)
        return str(next(v for v in steps if v != d
                        and (t.min is None or v >= t.min) and (t.max is None or v <= t.max)))
    raise AssertionError(f"no test value for {opt.dest} ({type(opt).__name__})")


def test_every_mutable_option_reaches_what_the_agent_reads(tmp_path):
    """A mutable option must change the policy, the timers or the RPC settings of the
    snapshot: an option marked mutable but read from the ConfigOpts at use would be
    reported as reloaded and never applied (the ConfigOpts never changes)."""
    conf = conf_with(tmp_path, {"a.conf": ""})
    running = confsnap.take(conf)
    table = confsnap.option_table()
    for key in sorted(running.mutable):
        group, opt = table[key]
        (tmp_path / "a.conf").write_text(f"[{group or 'DEFAULT'}]\n{opt.dest} = "
                                         f"{_another_value(opt)}\n")
        out = confsnap.reread(running, conf)
        assert list(out.changed) == [key]
        new = out.snapshot
        assert (new.policy, new.intervals, new.rpc) != (
            running.policy, running.intervals, running.rpc), key
