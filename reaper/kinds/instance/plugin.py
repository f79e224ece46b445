"""The ``instance`` kind: libvirt domains, instance directories, the Nova-DB reclaim.

The primary kind, first in ``[reaper] resource_kinds``. Its package holds its
collectors (``libvirt``: domains and their disks/interfaces; ``dirs``: instance
directories), its rules (``rules``: R1-R10 and R13) and its host steps (``domain``:
destroy, power off, undefine; ``files``: the directory deletes); the Nova DB claim and
finalize are ``reaper.nova.reclaim``'s. Its plan is the one the other kinds add to,
and its steps frame every teardown, so the engine (``reaper.planner``,
``reaper.executor.teardown``) calls these modules itself, with the attempt's state
(resuming or not, the steps done so far) that the claim and the finalize need; this
plugin is the kind's face to the manager. The modules of this package import nothing
of the engine, so the engine's use of them makes no import cycle.
"""
from __future__ import annotations

from reaper.kinds import ActionOption, KindInfo, Phase, ResourceKindPlugin
from reaper.objects.fields import Action, ResourceKind
from reaper.objects.host import CollectorResult
from reaper.objects.step import StepResult

NAME = "instance"
STEPS = {
    "claim": Phase.CLAIM,
    "release_claim": Phase.CLAIM,
    "destroy_domain": Phase.DESTROY,
    "power_off": Phase.DESTROY,
    "delete_files": Phase.DELETE_FILES,
    "undefine_domain": Phase.UNDEFINE,
    "finalize_db": Phase.FINALIZE,
}


class InstanceKind(ResourceKindPlugin):
    def describe(self) -> KindInfo:
        from reaper import policy
        return KindInfo(
            name=NAME,
            collectors=(ResourceKind.DOMAIN.value, ResourceKind.INSTANCE_DIR.value),
            actions={cls: ActionOption(name, policy.option_default(name))
                     for cls, name in policy.ACTION_OPTIONS.items()},
            steps=STEPS)

    def collect(self, reaper, conn) -> dict[str, CollectorResult]:
        from reaper.kinds.instance import dirs as dir_inv
        from reaper.kinds.instance import libvirt as libvirt_inv
        if conn is None:
            domains = CollectorResult("domain", False, error=f"cannot connect to libvirt at "
                                                             f"{reaper.libvirt_uri}")
        else:
            domains = libvirt_inv.collect_domains(conn, reaper.policy.instance_name_template,
                                                  reaper._parse_cache)
        dirs = dir_inv.collect_instance_dirs(reaper.policy.instances_path)
        return {ResourceKind.DOMAIN.value: domains, ResourceKind.INSTANCE_DIR.value: dirs}

    def plan(self, ctx):
        from reaper import planner
        return planner.core_plan(ctx.inv, ctx.view, ctx.policy, ctx.now, ctx.journaled)

    def steps(self, plan):
        """Nova's order for what the plan holds of the instance."""
        if plan.action is Action.SHUTDOWN:
            return [(Phase.DESTROY, "power_off")]
        if plan.action is Action.RELEASE:
            return [(Phase.CLAIM, "release_claim")]
        out = []
        if plan.action is Action.RECLAIM:
            out.append((Phase.CLAIM, "claim"))
        if plan.domain_name:
            out.append((Phase.DESTROY, "destroy_domain"))
        if plan.dirs:
            out.append((Phase.DELETE_FILES, "delete_files"))
        if plan.domain_name:
            out.append((Phase.UNDEFINE, "undefine_domain"))
        if plan.finalize_db:
            out.append((Phase.FINALIZE, "finalize_db"))
        return out

    def touches(self, plan) -> set[str]:
        out = set()
        if plan.domain_name:
            out.add(ResourceKind.DOMAIN.value)
        if plan.dirs:
            out.add(ResourceKind.INSTANCE_DIR.value)
        return out

    def reverify(self, plan, row, migrations, policy, now):
        from reaper import planner
        return planner.reverify(plan, row, migrations, policy, now)

    def run_step(self, ctx, step, plan) -> StepResult:
        """A step outside a journaled attempt (as a first attempt would run it)."""
        from reaper.executor import teardown
        if step not in STEPS:
            raise ValueError(f"unknown step {step}")
        return teardown.run_core_step(ctx, plan, step, resuming=False)
