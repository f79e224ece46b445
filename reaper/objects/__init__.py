"""Immutable records passed between the stages, split by concern.

``fields`` (enumerations), ``host`` (what the collectors saw), ``nova`` (the rows of the
Nova view), ``plan`` (findings, teardowns, guard results). Records of one resource
kind only live in that kind's package (``reaper.kinds.<kind>.objects``).
"""
