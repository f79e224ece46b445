"""The records' shared decorator: frozen, slotted dataclasses."""
from __future__ import annotations

import dataclasses


def _frozen(cls):
    return dataclasses.dataclass(frozen=True, slots=True)(cls)
