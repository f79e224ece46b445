"""Only full passes count toward the grace period: targeted passes (an RPC reap of one
instance, the nova-log watcher's audits) look at the observations without adding."""
from __future__ import annotations

import dataclasses

from reaper import demo


def test_targeted_passes_do_not_hurry_the_grace_period(tmp_path):
    reaper, _, cast = demo.build(str(tmp_path / "host"))
    u = {m.label: m.uuid for m in cast}["evacuated"]
    reaper.policy = dataclasses.replace(reaper.policy, grace_observations=2, grace_seconds=0)
    try:
        for _ in range(3):
            reaper.run_pass("audit", only_uuid=u)
        rep = reaper.run_pass("reap", only_uuid=u)          # still never observed
        assert rep.actions == []
        assert {f["result"] for f in rep.findings} == {"waiting_grace"}
        reaper.run_pass("audit")                              # full pass: 1st observation
        rep = reaper.run_pass("reap", only_uuid=u)          # targeted: sees 1, adds none
        assert rep.actions == [] and "seen 1/2" in rep.findings[0]["grace"]
        rep = reaper.run_pass("reap")                         # full pass: 2nd -> ripe
        assert any(a["instance_uuid"] == u and a["result"] == "done" for a in rep.actions)
    finally:
        reaper.close()
