"""The kinds manager: the enabled resource kinds of one Reaper, in configured order.

Loaded with stevedore from the ``reaper.resource_kinds`` entry points, enabled and
ordered by ``[reaper] resource_kinds`` (``name_order``), like neutron's agent
extensions manager. The Reaper owns it; nothing here is a module global, so two
Reapers in one process (tests) never see each other's kinds.

Besides the enabled kinds the manager keeps the other installed kinds *known*: their
``describe()`` only (no handles, no collection, planning or steps). A journal entry
written while a kind was enabled keeps reading the same after it is disabled: its
steps are known (and a step of a disabled kind fails as an unknown step, retried,
rather than being skipped), its classification parses, its action option is read.
"""
from __future__ import annotations

import threading
from typing import Callable, Iterable, Mapping, Sequence

from oslo_log import log as logging

from reaper import exception
from reaper.kinds import ActionOption, KindInfo, Phase, PlanContext, ResourceKindPlugin
from reaper.objects.fields import Classification
from reaper.objects.host import CollectorResult
from reaper.objects.plan import Plan, TeardownPlan
from reaper.objects.step import StepResult

LOG = logging.getLogger(__name__)

GROUP = "reaper.resource_kinds"
PRIMARY = "instance"
# Today's order: build_from_conf wired iSCSI, then the network, then the services.
DEFAULT_KINDS = ["instance", "iscsi", "network", "services"]


def enabled_names(conf) -> list[str]:
    """``[reaper] resource_kinds``, checked."""
    names = list(conf.reaper.resource_kinds)
    if not names or names[0] != PRIMARY:
        raise exception.KindError(f"[reaper] resource_kinds must start with {PRIMARY!r}: {names}")
    if len(set(names)) != len(names):
        raise exception.KindError(f"[reaper] resource_kinds names a kind twice: {names}")
    return names


def _load(conf, names: Sequence[str] | None):
    """The plugins of ``names`` (in that order), or of every installed kind."""
    from stevedore import extension, named

    def missing(names):
        raise exception.KindError(f"resource kinds not installed (entry points {GROUP}): "
                        f"{', '.join(sorted(names))}")

    def failed(_mgr, ep, err):
        LOG.warning("resource kind %s cannot be loaded: %s", ep.name, err)

    if names is None:
        mgr = extension.ExtensionManager(GROUP, invoke_on_load=True, invoke_args=(conf,),
                                         on_load_failure_callback=failed)
        return [e.obj for e in sorted(mgr.extensions, key=lambda e: e.name)]
    mgr = named.NamedExtensionManager(GROUP, names=list(names), name_order=True,
                                      invoke_on_load=True, invoke_args=(conf,),
                                      on_missing_entrypoints_callback=missing,
                                      propagate_map_exceptions=True,
                                      on_load_failure_callback=_reraise)
    return [e.obj for e in mgr.extensions]


def _failed(kind: ResourceKindPlugin, why: str) -> dict[str, CollectorResult]:
    return {c: CollectorResult(c, False, error=why) for c in kind.describe().collectors}


def _collect_one(kind: ResourceKindPlugin, reaper, conn) -> dict[str, CollectorResult]:
    try:
        return kind.collect(reaper, conn)
    except Exception as e:  # noqa: BLE001 - a failed collector marks its kind only
        return _failed(kind, str(e))


def _reraise(_mgr, ep, err):
    raise exception.KindError(f"resource kind {ep.name} cannot be loaded: {err}") from err


class KindManager:
    """The enabled kinds (``kinds``, primary first) and the known ones."""

    def __init__(self, kinds: Sequence[ResourceKindPlugin],
                 known: Iterable[ResourceKindPlugin] = ()) -> None:
        self._kinds: list[ResourceKindPlugin] = []
        self._known: list[ResourceKindPlugin] = []
        for k in kinds:
            self.add(k)
        for k in known:
            if k.describe().name not in self.names():
                self._known.append(k)

    # -- building ------------------------------------------------------------------

    @classmethod
    def from_conf(cls, conf, names: Sequence[str] | None = None) -> "KindManager":
        """The kinds ``[reaper] resource_kinds`` enables (or ``names``), from the
        entry points, and every other installed kind as known."""
        names = list(names) if names is not None else enabled_names(conf)
        enabled = _load(conf, names)
        # A kind's own (deprecated) switch, such as [network] enabled = false.
        off = [k for k in enabled if not k.enabled()]
        enabled = [k for k in enabled if k not in off]
        others = [k for k in _load(conf, None) if k.describe().name not in names]
        return cls(enabled, [*off, *others])

    @classmethod
    def installed(cls, conf=None) -> "KindManager":
        """Every installed kind as known, none enabled: what reads journals and
        describes options without a Reaper's own configuration."""
        from oslo_config import cfg

        return cls([], _load(conf if conf is not None else cfg.CONF, None))

    @classmethod
    def primary_only(cls, conf=None) -> "KindManager":
        """The primary kind alone (a Reaper built piecewise, as tests do; the other
        kinds are added with ``add``)."""
        from oslo_config import cfg

        # Through its entry point like every kind: the engine never imports a kind.
        return cls(_load(conf if conf is not None else cfg.CONF, [PRIMARY]))

    def add(self, kind: ResourceKindPlugin) -> ResourceKindPlugin:
        """Enable ``kind`` (after the others), replacing an enabled kind of its name;
        returns it."""
        name = kind.describe().name
        for i, k in enumerate(self._kinds):
            if k.describe().name == name:
                self._kinds[i] = kind
                break
        else:
            self._kinds.append(kind)
        self._known = [k for k in self._known if k.describe().name != name]
        return kind

    # -- what they are -----------------------------------------------------------------

    @property
    def kinds(self) -> tuple[ResourceKindPlugin, ...]:
        return tuple(self._kinds)

    def names(self) -> list[str]:
        return [k.describe().name for k in self._kinds]

    def get(self, name: str) -> ResourceKindPlugin | None:
        return next((k for k in self._kinds if k.describe().name == name), None)

    def _info(self) -> tuple[KindInfo, ...]:
        return tuple(k.describe() for k in (*self._kinds, *self._known))

    def action_options(self) -> dict[str, ActionOption]:
        """classification -> its action option, of every known kind."""
        out: dict[str, ActionOption] = {}
        for info in self._info():
            for cls, opt in info.actions.items():
                out.setdefault(cls, opt)
        return out

    def leak_kind(self, classification) -> str | None:
        """The audit resource kind of a leak classification (None: not a leak)."""
        for info in self._info():
            if classification in info.leaks:
                return info.leaks[classification]
        return None

    def classification(self, value: str):
        """The classification of a journaled plan: fields.Classification, or one of
        a known kind's; ValueError when no kind knows it."""
        try:
            return Classification(value)
        except ValueError:
            for info in self._info():
                for cls in (*info.actions, *info.leaks):
                    if cls == value:
                        return cls
            raise

    # -- lifecycle ----------------------------------------------------------------------

    def open(self) -> None:
        for k in self._kinds:
            k.open()

    def close(self) -> None:
        for k in self._kinds:
            try:
                k.close()
            except Exception:
                LOG.debug("closing resource kind %s failed", k.describe().name,
                          exc_info=True)

    # -- a pass -------------------------------------------------------------------------

    def collect(self, reaper, conn) -> dict[str, CollectorResult]:
        """Every enabled kind's collectors. A kind that raises marks each of its
        collectors failed (``ok=False``), never the pass.

        The primary kind collects in a thread of its own while the others collect on
        the calling thread, in kind order: most of its time is spent waiting for
        libvirtd (one ``XMLDesc`` per domain), the others' waiting for the kernel,
        ``iscsiadm`` and ovsdb-server, so a pass waits for the slowest rather than the
        sum (doc/design.md, "What a pass is"). Only the primary kind moves: it uses nothing
        but its libvirt connection (thread-safe) and its own parse cache, while the
        others' handles (netlink and OVSDB sockets, the state DB) stay on the thread
        that opened them. Collectors only read, so neither order nor overlap changes
        what a pass may do: every action is re-verified at act time."""
        kinds = list(self._kinds)
        if len(kinds) < 2:
            return {c: r for k in kinds for c, r in _collect_one(k, reaper, conn).items()}
        first: list[dict[str, CollectorResult]] = []
        worker = threading.Thread(target=lambda: first.append(_collect_one(kinds[0], reaper,
                                                                           conn)),
                                  name="reaper-collect-" + kinds[0].describe().name,
                                  daemon=True)
        worker.start()
        try:
            rest = [_collect_one(k, reaper, conn) for k in kinds[1:]]
        finally:
            worker.join()
        out: dict[str, CollectorResult] = {}
        for got in (first[0] if first else _failed(kinds[0], "collector thread died"),
                    *rest):
            out.update(got)
        return out

    def plan(self, inv, view, policy, now, journaled: frozenset[str] = frozenset()) -> Plan:
        """The one place the kinds' plans are merged: each enabled kind in order (the
        primary first) adds to the plan of those before it."""
        plan = Plan(findings=(), teardowns=())
        for k in self._kinds:
            plan = k.plan(PlanContext(inv, view, policy, now, plan, frozenset(journaled)))
        return plan

    def steps_for(self, plan: TeardownPlan) -> list[str]:
        """The teardown's steps: every kind's, ordered by phase, stable by kind order
        (the enabled kinds first, then the known ones)."""
        ordered: list[tuple[Phase, int, str]] = []
        for k in (*self._kinds, *self._known):
            for phase, step in k.steps(plan):
                if all(step != s for _, _, s in ordered):
                    ordered.append((phase, len(ordered), step))
        return [s for _, _, s in sorted(ordered)]

    def owner_of(self, step: str) -> ResourceKindPlugin | None:
        """The enabled kind that runs ``step``."""
        for k, info in ((k, k.describe()) for k in self._kinds):
            if step in info.steps:
                return k
        return None

    def run_step(self, ctx, step: str, plan: TeardownPlan) -> StepResult:
        k = self.owner_of(step)
        if k is None:
            raise ValueError(f"unknown step {step}")
        return StepResult.of(k.run_step(ctx, step, plan))

    def reverifiers(self) -> Mapping[str, Callable]:
        """Leak classification -> the compare-and-act of the enabled kind owning it."""
        out: dict[str, Callable] = {}
        for k, info in ((k, k.describe()) for k in self._kinds):
            for cls in info.leaks:
                out.setdefault(cls, k.reverify)
        return out


def default_actions(conf=None) -> dict:
    """classification -> default action of every installed kind (for Policy values
    built without a configuration)."""
    from reaper.objects.fields import Action
    mgr = KindManager.installed(conf)
    return {cls: Action(opt.default) for cls, opt in mgr.action_options().items()}
