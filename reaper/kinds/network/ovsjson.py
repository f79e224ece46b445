"""A JSON parser for python-ovs' JSON-RPC built on the standard library's.

python-ovs parses every OVSDB message with its C extension (``ovs._json``) when
it was built with it (distribution packages are), else with a pure-Python lexer
that handles one character per call: a pip-installed ``ovs`` without
libopenvswitch headers. With that lexer the IDL's initial dump of a busy
integration bridge (1,000 ports) takes most of a cold pass's OVS time.

``StdlibParser`` offers python-ovs' ``Parser`` interface (``feed`` returns the
characters consumed, ``is_done``, ``finish`` returns the value or an error
string): ``feed`` only finds where the top-level object or array ends (strings
and brackets matched by one regular expression, in C), and ``finish`` decodes
the whole text once with ``json.loads``. ``install`` puts it in place of the
pure-Python parser; it never replaces the C one.
"""
from __future__ import annotations

import json
import re

import ovs.json

# A complete string (escapes included), a bracket, or a lone quote: the start of a
# string whose end has not been received yet.
_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]|"', re.DOTALL)
_OPEN, _CLOSE = frozenset("[{"), frozenset("]}")
_SPACE = " \t\r\n"
# python-ovs' own parser class as imported (the C one or the pure-Python one).
ORIGINAL = ovs.json.Parser


class StdlibParser:
    """python-ovs' incremental Parser interface; the top level must be an object or
    an array (as JSON-RPC's and OVSDB's always are)."""

    def __init__(self, check_trailer: bool = False):
        self.check_trailer = check_trailer
        self._parts: list[str] = []
        self._tail = ""             # an unterminated string, rescanned on the next feed
        self._depth = 0
        self._started = False
        self.done = False
        self.error: str | None = None

    def _fail(self, message: str) -> None:
        if self.error is None:
            self.error = message
        self.done = True

    def feed(self, s: str) -> int:
        if self.done:
            if self.check_trailer and s.strip(_SPACE):
                self._fail("trailing garbage at end of input")
            return 0
        i = 0
        if not self._started:
            i = len(s) - len(s.lstrip(_SPACE))
            if i == len(s):
                return i
            if s[i] not in _OPEN:
                self._fail(f"syntax error at beginning of input ({s[i]!r})")
                return i
            self._started = True
        text = self._tail + s[i:]
        base = i - len(self._tail)      # text[k] is s[base + k]
        self._tail = ""
        depth = self._depth
        end = None
        for m in _TOKEN.finditer(text):
            tok = m.group()
            c = tok[0]
            if c == '"':
                if len(tok) == 1:       # unterminated: wait for more input
                    self._tail = text[m.start():]
                    break
                continue
            depth += 1 if c in _OPEN else -1
            if depth == 0:
                end = m.end()
                break
        self._depth = depth
        if end is None:
            self._parts.append(s)
            return len(s)
        consumed = base + end
        self._parts.append(s[:consumed])
        self.done = True
        if self.check_trailer and s[consumed:].strip(_SPACE):
            self._fail("trailing garbage at end of input")
        return consumed

    def is_done(self) -> bool:
        return self.done

    def finish(self):
        """The parsed value, or an error message (a str), as python-ovs' Parser."""
        if self.error is not None:
            return self.error
        if not self._started:
            return "empty input stream"
        if not self.done:
            return "unexpected end of input"
        try:
            return json.loads("".join(self._parts))
        except ValueError as e:
            return f"syntax error: {e}"


def install() -> bool:
    """Use StdlibParser where python-ovs would use its pure-Python one; returns
    whether it did (False with the C extension, which stays)."""
    if ovs.json.PARSER == ovs.json.PARSER_C or ovs.json.Parser is StdlibParser:
        return False
    ovs.json.Parser = StdlibParser
    return True
