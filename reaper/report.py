"""The pass report: what one pass found, refused and did, its exit code and renderings."""
from __future__ import annotations

import dataclasses
import json

# Exit codes of one-shot passes, after `nova-manage placement audit`.
EXIT_OK = 0
EXIT_ERROR = 1
EXIT_FINDINGS = 3
EXIT_ACTIONS = 4
EXIT_GUARD = 5
# sysexits' EX_TEMPFAIL: another pass held the host's pass lock longer than this one
# would wait (reaper-manage, reaper-agent --once); nothing was done, try again later.
EXIT_BUSY = 75

ERROR_GUARDS = {"view_unavailable", "collector_failed", "state_unavailable"}


@dataclasses.dataclass
class PassReport:
    host: str
    pass_id: str
    mode: str
    dry_run: bool
    started_at: str
    finished_at: str = ""
    findings: list[dict] = dataclasses.field(default_factory=list)
    guards: list[dict] = dataclasses.field(default_factory=list)
    actions: list[dict] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    db_queries: int = 0
    # The host's pause as the pass read it ({"reason", "by", "since"}), or None.
    paused: dict | None = None
    # Journal entries this pass set aside as unreadable (their audit records).
    quarantined: list[dict] = dataclasses.field(default_factory=list)
    # The journal after the pass: {"backlog": running entries, "quarantined": n}.
    journal: dict = dataclasses.field(default_factory=dict)
    # Why the pass could not write Nova's DB ([database] read_only), when it had a
    # write to do: its reclaims and releases were reported, not done.
    db_read_only: str | None = None
    # How the pass read Nova's DB: "full" (the whole view), "unchanged" (the change
    # check matched: the last full view, which planned nothing to do) or
    # "reclaim_check" (a reclaim pass that found no candidate in the soft-deleted rows)
    # or "reclaim_disabled" (a timer's reclaim pass with reclaim_instance_interval 0).
    db_view: str = "full"

    @property
    def summary(self) -> dict:
        by_cls: dict[str, int] = {}
        for f in self.findings:
            by_cls[f["classification"]] = by_cls.get(f["classification"], 0) + 1
        by_result: dict[str, int] = {}
        for a in self.actions:
            by_result[a["result"]] = by_result.get(a["result"], 0) + 1
        return {"findings": len(self.findings), "by_classification": by_cls,
                "actions": by_result, "guards_tripped": [g["guard"] for g in self.guards],
                "errors": len(self.errors), "exit_code": self.exit_code,
                "paused": self.paused is not None,
                "journal_quarantined": self.journal.get("quarantined")}

    @property
    def exit_code(self) -> int:
        if self.errors or any(g["guard"] in ERROR_GUARDS for g in self.guards) \
                or any(a["result"] == "failed" or _step_failed(a) for a in self.actions):
            return EXIT_ERROR
        if self.guards:
            return EXIT_GUARD
        if any(a["result"] == "done" for a in self.actions):
            return EXIT_ACTIONS
        if any(f["action"] != "none" for f in self.findings):
            return EXIT_FINDINGS
        return EXIT_OK

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["summary"] = self.summary
        return d

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2, default=str)

    def to_table(self) -> str:
        lines = [f"host {self.host}  pass {self.pass_id}  mode {self.mode}"
                 + ("  (dry run)" if self.dry_run else "")]
        if self.paused and not any(g["guard"] == "paused" for g in self.guards):
            lines.append(f"PAUSED ({self.paused.get('reason')}): audits and dry runs only")
        if self.db_read_only:
            lines.append(f"NOVA DB READ-ONLY: reclaims and claim releases only reported "
                         f"({self.db_read_only})")
        for q in self.quarantined:
            lines.append(f"QUARANTINED {q['reason']}")
        for g in self.guards:
            lines.append(f"GUARD {g['guard']}: {g['reason']}")
        for e in self.errors:
            lines.append(f"ERROR {e}")
        if self.findings:
            rows = [("KIND", "RESOURCE", "INSTANCE", "CLASSIFICATION", "ACTION", "RESULT")]
            rows += [(f["kind"], _short(f["resource"]), f["instance_uuid"] or "-",
                      f["classification"], f["action"], f["result"]) for f in self.findings]
            widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
            for r in rows:
                lines.append("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            lines.append("")
            for f in self.findings:
                lines.append(f"- {_short(f['resource'])}: {f['reason']}")
        else:
            lines.append("no findings")
        for a in self.actions:
            steps = ", ".join(f"{s}: {d}" for s, d in a.get("steps", []))
            lines.append(f"{a['result'].upper()} {a['classification']} {a['instance_uuid']}"
                         f" ({a['reason']})" + (f" [{steps}]" if steps else ""))
        s = self.summary
        quarantined = (f", {s['journal_quarantined']} journal entries quarantined"
                       if s["journal_quarantined"] else "")
        lines.append(f"summary: {s['findings']} findings, actions: {counts(s['actions'])}, "
                     f"guards: {names(s['guards_tripped'])}{quarantined}, "
                     f"exit {s['exit_code']}")
        return "\n".join(lines)


def _step_failed(action: dict) -> bool:
    """A teardown done on the host whose Neutron/Cinder/Placement step failed (it is
    retried next pass): the pass still exits as an error, for monitoring to see."""
    return any(str(detail).startswith("failed") for _step, detail in action.get("steps") or ())


def counts(by_name: dict | None) -> str:
    """``{'done': 7, 'aborted': 1}`` as people read it: ``aborted 1, done 7``."""
    return ", ".join(f"{k} {v}" for k, v in sorted((by_name or {}).items())) or "none"


def names(items: list | None) -> str:
    """``['view_unavailable', 'collector_failed']`` as ``view_unavailable, collector_failed``."""
    return ", ".join(str(x) for x in items or []) or "none"


def _short(resource: str, width: int = 60) -> str:
    return resource if len(resource) <= width else "..." + resource[-(width - 3):]
