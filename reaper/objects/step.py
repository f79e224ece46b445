"""What a teardown step did: a typed result instead of a free string.

A step returns a ``StepResult``: its ``outcome`` (what callers decide on) and its
``detail`` (what it removed, kept or found). ``str()`` renders the text the journal
(``journal_steps.detail``), the audit records and the reports carry; that text is
unchanged from when steps returned strings, so journals and audit logs written by
earlier versions read the same. Nothing ever parses that text back into a result.

(``reaper.services.StepResult`` is a different record: what a call to a cloud
service did, with its leftovers; the services kind renders it into this one.)
"""
from __future__ import annotations

import dataclasses
import enum


class StepOutcome(str, enum.Enum):
    """What a step did, as far as its callers need to know."""
    DONE = "done"               # it changed what it was for
    ABSENT = "absent"           # nothing to change (gone, or already so): success
    KEPT = "kept"               # left on purpose: in use, refused, changed since planned
    NOT_DONE = "not_done"       # given up: its service is not configured here
    # What the executor reports of a step it did not run in this attempt.
    DONE_EARLIER = "done_earlier"   # an earlier attempt did it (journaled done)
    WAITING = "waiting"             # waits for another step to be done first
    FAILED = "failed"               # raised: retried, or the teardown stops

    def __str__(self) -> str:
        return self.value


@dataclasses.dataclass(frozen=True)
class StepResult:
    """``outcome``; ``detail``, the step's own words; ``form``, how the text is
    worded around the detail (``{}`` is the detail): fixed per kind of result, so
    that the text stays what the journal has always held."""
    outcome: StepOutcome
    detail: str = ""
    form: str = "{}"

    def __str__(self) -> str:
        return self.form.format(self.detail)

    @classmethod
    def done(cls, detail: str) -> "StepResult":
        return cls(StepOutcome.DONE, detail)

    @classmethod
    def absent(cls, detail: str) -> "StepResult":
        return cls(StepOutcome.ABSENT, detail)

    @classmethod
    def kept(cls, why: str) -> "StepResult":
        """Kept, and why: "kept: <why>"."""
        return cls(StepOutcome.KEPT, why, "kept: {}")

    @classmethod
    def in_use(cls, what: str) -> "StepResult":
        """Kept because something uses it: "kept, in use: <what>"."""
        return cls(StepOutcome.KEPT, what, "kept, in use: {}")

    @classmethod
    def not_done(cls, why: str) -> "StepResult":
        return cls(StepOutcome.NOT_DONE, why, "not done: {}")

    @classmethod
    def done_earlier(cls) -> "StepResult":
        return cls(StepOutcome.DONE_EARLIER, "", "done earlier")

    @classmethod
    def waits_for(cls, step: str) -> "StepResult":
        return cls(StepOutcome.WAITING, step, "waits for {}")

    @classmethod
    def failed(cls, error: object) -> "StepResult":
        return cls(StepOutcome.FAILED, str(error), "failed: {}")

    @classmethod
    def of(cls, value: "StepResult | str") -> "StepResult":
        """A kind's step result; a kind written before steps were typed returns its
        text, taken as done with that text."""
        return value if isinstance(value, StepResult) else cls.done(str(value))


class TeardownResult(str, enum.Enum):
    """How a whole teardown attempt ended (``executor.teardown.Outcome.result``, the
    ``result`` of its audit action record)."""
    DONE = "done"
    ABORTED = "aborted"             # the plan no longer held: nothing more is done
    BACKED_OFF = "backed_off"       # the claim was lost: the instance is Nova's again
    FAILED = "failed"               # a step failed: the journal retries it next pass
    INTERRUPTED = "interrupted"     # the agent is stopping: the journal resumes it
    HELD_ELSEWHERE = "held_elsewhere"   # a live process owns the journal entry
    HELD_READ_ONLY = "held_read_only"   # its next steps write Nova's DB, read-only now

    def __str__(self) -> str:
        return self.value
