"""Parsers of Nova's JSON texts, remembered by text.

Each pass reads the same ``network_info`` and ``connection_info`` texts again (from
the cached view, or a fresh read of unchanged rows), and parsing them is a pure
function of the text. :func:`by_text` keeps the answers of the last texts parsed,
so a pass parses only what changed. The answer must be immutable: every caller
gets the same object.
"""
from __future__ import annotations

import functools
from typing import Callable, TypeVar

T = TypeVar("T")

# Texts up to this size are remembered (Nova's are a few KB per VIF or volume); at
# most this many, least recently used dropped. The key is the text the view already
# holds; a bigger one (a hostile value, say) is parsed every time, never kept.
MAX_CHARS = 32 * 1024
ENTRIES = 4096


def by_text(parse: Callable[[object], T]) -> Callable[[object], T]:
    """``parse(text)``, remembered for texts (``str``) up to MAX_CHARS; anything else
    (None, bytes, a bigger text) is parsed at each call."""
    cached = functools.lru_cache(maxsize=ENTRIES)(parse)

    @functools.wraps(parse)
    def call(text):
        if isinstance(text, str) and len(text) <= MAX_CHARS:
            return cached(text)
        return parse(text)
    call.cache_info = cached.cache_info
    return call
