"""Resource kinds: the plugin base class and its value types.

A resource kind is everything the reaper knows about one sort of host resource: how
to read it (collectors), which rules judge it (its planner), which steps tear it down
and how (its executor steps), which classifications it adds and which ``[reaper]
<x>_action`` option decides what is done with each. One package per kind
(``reaper.kinds.<name>``), one entry point in the ``reaper.resource_kinds`` group;
``[reaper] resource_kinds`` enables them and orders them. The kinds manager
(``reaper.kinds.manager``) is owned by the Reaper object: nothing here is process-wide.

The contract, in the spirit of os-vif's ``PluginBase``:

- ``describe()`` says what the kind is (``KindInfo``); it is static and cheap.
- The constructor takes the configuration and does no I/O; ``open()`` makes the
  long-lived handles (sockets, sessions); ``close()`` releases them and never raises.
- ``collect()`` only reads, and marks a failure ``ok=False`` instead of raising.
- ``plan()`` is pure: it takes the plan made so far by the kinds before it and
  returns that plan with its own findings and teardowns added and the parts it owns
  (VIFs, volumes, service steps...) given to the teardowns of other kinds. The engine
  folds the enabled kinds in configured order, the primary kind (``instance``) first.
- ``steps()`` names the steps it runs for a teardown, each with its ``Phase``: the
  executor runs the steps of all kinds ordered by phase, stable by kind order.
- ``reverify()`` is the compare-and-act check of the teardowns of its own leak
  classifications (those owned by no instance row), right before they run.
- ``run_step()`` runs one of its steps and returns what it did, a
  ``reaper.objects.step.StepResult`` (its ``str()`` is what the journal holds).

Classifications are ``str`` values: the built-in kinds use ``fields.Classification``
(a ``str`` enum); a new kind defines its own ``str`` enum, and the engine only ever
compares, hashes and prints their values.
"""
from __future__ import annotations

import abc
import dataclasses
import enum
from typing import Any, Mapping, Sequence

from reaper.objects.fields import Action
from reaper.objects.host import CollectorResult
from reaper.objects.plan import Plan, TeardownPlan
from reaper.objects.step import StepResult


class Phase(enum.IntEnum):
    """The teardown order (README "Teardown order"): steps of all kinds run by phase."""
    CLAIM = 10              # claim / release the Nova row (the reclaim's guard)
    DESTROY = 20            # stop the guest (destroy_domain, power_off)
    UNPLUG = 30             # host network plumbing
    DISCONNECT = 40         # host volume connections
    DELETE_FILES = 50       # instance files, and other host files
    UNDEFINE = 60           # the libvirt definition
    SERVICES = 70           # calls to the cloud's services (Neutron, Cinder, Placement)
    FINALIZE = 80           # the Nova DB finalize of a reclaim


@dataclasses.dataclass(frozen=True)
class ActionOption:
    """The ``[reaper]`` option deciding what is done with one classification: its
    name and default. The option itself is defined (registered) by the kind's module."""
    name: str
    default: str


@dataclasses.dataclass(frozen=True)
class KindInfo:
    """What a kind is, statically.

    ``collectors``: the ``CollectorResult.kind`` values its ``collect`` returns (a
    failed one holds the teardowns that touch it). ``actions``: classification ->
    its action option. ``leaks``: classification -> the audit resource kind of
    teardowns that clean a leak owned by no instance (their ``instance_uuid`` is the
    leaked resource's name, and their action records carry no instance uuid).
    ``steps``: every step name it may run, with its phase.
    """
    name: str
    collectors: tuple[str, ...] = ()
    actions: Mapping[str, ActionOption] = dataclasses.field(default_factory=dict)
    leaks: Mapping[str, str] = dataclasses.field(default_factory=dict)
    steps: Mapping[str, Phase] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class PlanContext:
    """What a kind's planner sees: the pass's inputs and the plan made so far."""
    inv: Any                    # objects.host.Inventory
    view: Any                   # objects.nova.NovaView
    policy: Any                 # policy.Policy
    now: Any                    # datetime.datetime (naive UTC)
    plan: Plan
    # Instances with an unfinished teardown in our journal.
    journaled: frozenset[str] = frozenset()


def host_teardown(plan: TeardownPlan) -> bool:
    """Whether ``plan`` is a teardown of host resources: a power-off or the release
    of a stranded claim is one step of the primary kind, nothing else."""
    return plan.action not in (Action.SHUTDOWN, Action.RELEASE)


class ResourceKindPlugin(abc.ABC):
    """The base class of a resource kind (see the module docstring)."""

    def __init__(self, conf) -> None:
        self.conf = conf

    @abc.abstractmethod
    def describe(self) -> KindInfo:
        """Name, collectors, action options, leak classifications, steps."""

    def enabled(self) -> bool:
        """False: off by a switch of the kind's own although ``[reaper]
        resource_kinds`` names it (a deprecated option kept working)."""
        return True

    def open(self) -> None:     # noqa: B027 - optional hook
        """Make the long-lived handles (called once, when the Reaper is built)."""

    def close(self) -> None:    # noqa: B027 - optional hook
        """Release the handles; never raises."""

    def collect(self, reaper, conn) -> Mapping[str, CollectorResult]:
        """Read the kind's resources: CollectorResult.kind -> result. Read-only; a
        failure is ``ok=False``, never an exception."""
        return {}

    def plan(self, ctx: PlanContext) -> Plan:
        """Pure: ``ctx.plan`` with this kind's findings, teardowns and parts added."""
        return ctx.plan

    def steps(self, plan: TeardownPlan) -> Sequence[tuple[Phase, str]]:
        """The steps this kind runs for ``plan``, in its own order."""
        return ()

    def touches(self, plan: TeardownPlan) -> set[str]:
        """The collectors whose failure holds ``plan``: by default all of this kind's
        when it runs a step of the plan."""
        return set(self.describe().collectors) if self.steps(plan) else set()

    def reverify(self, plan: TeardownPlan, row, migrations, policy, now
                 ) -> tuple[bool, str]:
        """Compare-and-act for the teardowns of this kind's leak classifications."""
        return False, f"{self.describe().name} cannot re-check {plan.classification}"

    def run_step(self, ctx, step: str, plan: TeardownPlan) -> StepResult:
        """Run one of this kind's steps (idempotent); returns what it did. (A plain
        string is still taken, as a done step with that text.)"""
        raise ValueError(f"unknown step {step}")
