"""The agent's running configuration: one immutable snapshot, validated whole.

Why not the live ConfigOpts: oslo.config's ``mutate_config_files`` puts a file's
raw values in place first and converts them only when an option is read, so a
reload refused half way (one bad value) left the rest of the new file live: an
``[rpc] allow_remote_reap = true`` next to an invalid ``max_destroy_per_pass`` took
effect although the agent said it kept the running configuration, and
``allow_remote_reap = maybe`` made every later read raise.

So the agent never changes its ConfigOpts after start-up. A reload parses the
files into a fresh ConfigOpts, reads (converts and range-checks) every option the
reaper registers, runs :func:`reaper.config.validate` on it, builds a new
:class:`ConfigSnapshot`, and only then swaps its one reference. A file refused at
any point changes nothing anywhere. Every reader of the running agent (policy,
timers and jitter, RPC permissions, notifications, metrics) reads the snapshot.

Options not marked ``mutable`` keep their start-up value: a change to one is
reported as needing a restart, never applied.
"""
from __future__ import annotations

import dataclasses
import types
from typing import Any, Mapping

from oslo_config import cfg

from reaper import policy as policy_mod

MASK = "***"


@dataclasses.dataclass(frozen=True)
class Intervals:
    """The agent's timers: seconds between passes (negative: off) and the jitter."""
    reap: int
    reclaim: int
    jitter: float
    # How long a timer's pass waits for another process's pass to end.
    pass_lock_timeout: float = 300.0

    def as_dict(self) -> dict:
        return {"reap": self.reap, "reclaim": self.reclaim, "jitter": self.jitter}


@dataclasses.dataclass(frozen=True)
class RpcSettings:
    """What the RPC endpoint checks at every call."""
    allow_remote_reap: bool
    pass_wait_timeout: float


class FrozenConf:
    """Read-only attribute access shaped like a ConfigOpts (``c.host``,
    ``c.reaper.dry_run``) over a snapshot's values, so code written against a
    ConfigOpts (``policy.from_conf``) builds from a snapshot unchanged."""

    __slots__ = ("_values", "_group", "_groups")

    def __init__(self, values: Mapping[str, Any], group: str = "DEFAULT"):
        object.__setattr__(self, "_values", values)
        object.__setattr__(self, "_group", group)
        object.__setattr__(self, "_groups",
                           frozenset(k.split(".", 1)[0] for k in values) - {"DEFAULT"})

    def __getattr__(self, name: str):
        if self._group == "DEFAULT" and name in self._groups:
            return FrozenConf(self._values, name)
        try:
            return self._values[f"{self._group}.{name}"]
        except KeyError:
            raise AttributeError(f"no option {name} in [{self._group}]") from None

    def __setattr__(self, name, value):
        raise AttributeError("a configuration snapshot is read-only")


@dataclasses.dataclass(frozen=True, eq=False)
class ConfigSnapshot:
    """Every reaper option's value ("group.option" -> value), and what the agent
    derives from them. Built only from values that all passed validation."""
    values: Mapping[str, Any]
    mutable: frozenset[str]
    secret: frozenset[str]
    policy: policy_mod.Policy
    intervals: Intervals
    rpc: RpcSettings

    @property
    def conf(self) -> FrozenConf:
        return FrozenConf(self.values)

    def get(self, group: str | None, name: str):
        return self.values[f"{group or 'DEFAULT'}.{name}"]

    def show(self, key: str, value: Any):
        """A value of option ``key`` as reports show it: secrets masked, JSON-shaped."""
        return MASK if key in self.secret else _plain(value)


@dataclasses.dataclass(frozen=True)
class Reload:
    """A validated re-read: the snapshot to swap in and what it changes."""
    snapshot: ConfigSnapshot
    changed: dict[str, list]            # "group.option" -> [old, new], applied
    needs_restart: dict[str, list]      # "group.option" -> [running, in the file], not applied


# --------------------------------------------------------------------------

def option_table() -> dict[str, tuple[str | None, cfg.Opt]]:
    """Every option the reaper registers (the sample config's list, with os-brick's
    [os_brick] of its own namespace): "group.option" -> (group or None for DEFAULT, Opt)."""
    from os_brick import opts as brick_opts

    from reaper.conf import opts
    out: dict[str, tuple[str | None, cfg.Opt]] = {}
    for group, group_opts in opts.list_opts() + brick_opts.list_opts():
        name = group.name if isinstance(group, cfg.OptGroup) else group
        for opt in group_opts:
            out[f"{name}.{opt.dest}"] = (None if name == "DEFAULT" else name, opt)
    return out


def take(conf, policy: policy_mod.Policy | None = None) -> ConfigSnapshot:
    """The snapshot of a ConfigOpts as it is at start-up (``config.load`` validated
    it). ``policy`` is the one the Reaper was built with; by default the one these
    values give. An option ``conf`` does not register reads as its default."""
    table = option_table()
    values = {key: _read(conf, group, opt, strict=False)
              for key, (group, opt) in table.items()}
    pol = policy if policy is not None else policy_mod.from_conf(FrozenConf(values))
    return _build(values, table, pol)


def reread(running: ConfigSnapshot, conf) -> Reload:
    """Parse ``conf``'s files afresh and validate all of it; raises on anything
    wrong (unreadable or malformed file, a bad value, a failed check) before
    anything is built. ``conf`` itself is never changed."""
    from reaper import config
    fresh_conf = parse_files(conf)
    config.validate(fresh_conf)
    table = option_table()
    fresh = {key: _read(fresh_conf, group, opt, strict=True)
             for key, (group, opt) in table.items()}
    merged = dict(running.values)
    changed: dict[str, list] = {}
    restart: dict[str, list] = {}
    for key, new in fresh.items():
        old = running.values.get(key)
        if key in running.values and old == new:
            continue
        shown = [running.show(key, old), running.show(key, new)]
        if table[key][1].mutable:
            merged[key] = new
            changed[key] = shown
        else:
            restart[key] = shown
    base = policy_mod.from_conf(running.conf)
    target = policy_mod.from_conf(FrozenConf(merged))
    snap = _build(merged, table, carry(running.policy, base, target))
    return Reload(snap, changed, restart)


def parse_files(conf) -> cfg.ConfigOpts:
    """A new ConfigOpts with every reaper option, parsed from the same files and
    directories as ``conf`` (which is left as it is)."""
    fresh = cfg.ConfigOpts()
    for group, opt in option_table().values():
        fresh.register_opt(opt, group=group)
    args: list[str] = []
    for path in conf.config_file or []:
        args += ["--config-file", path]
    dirs = conf.config_dir or []
    for path in [dirs] if isinstance(dirs, str) else dirs:
        args += ["--config-dir", path]
    fresh(args, project=getattr(conf, "project", None) or "reaper", default_config_files=[],
          default_config_dirs=[])
    return fresh


def carry(running: policy_mod.Policy, base: policy_mod.Policy,
          target: policy_mod.Policy) -> policy_mod.Policy:
    """The running policy with what the options changed: each field where the
    policy of the new values (``target``) differs from the one of the running
    values (``base``). Fields no reloaded option moved stay as the agent was
    started with them (its host, its paths, actions set up by code)."""
    changes: dict[str, Any] = {}
    for f in dataclasses.fields(running):
        b, t = getattr(base, f.name), getattr(target, f.name)
        if b == t:
            continue
        if f.name == "actions":
            moved = {cls: act for cls, act in t.items() if b.get(cls) != act}
            changes["actions"] = {**running.actions, **moved}
        else:
            changes[f.name] = t
    return dataclasses.replace(running, **changes) if changes else running


# --------------------------------------------------------------------------

def _read(conf, group: str | None, opt: cfg.Opt, *, strict: bool):
    try:
        section = conf if group is None else getattr(conf, group)
        value = getattr(section, opt.dest)
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        if strict:
            raise
        value = opt.default
    return _freeze(value)


def _freeze(value):
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    if isinstance(value, dict):
        return types.MappingProxyType({k: _freeze(v) for k, v in value.items()})
    return value


def _plain(value):
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return value


def _build(values: dict, table: dict, policy: policy_mod.Policy) -> ConfigSnapshot:
    frozen = types.MappingProxyType(dict(values))
    view = FrozenConf(frozen)
    return ConfigSnapshot(
        values=frozen,
        mutable=frozenset(k for k, (_, opt) in table.items() if opt.mutable),
        secret=frozenset(k for k, (_, opt) in table.items() if opt.secret),
        policy=policy,
        intervals=Intervals(view.reaper.reconcile_interval, view.reaper.reclaim_poll_interval,
                            view.reaper.interval_jitter, view.reaper.pass_lock_timeout),
        rpc=RpcSettings(view.rpc.allow_remote_reap, view.rpc.pass_wait_timeout))
