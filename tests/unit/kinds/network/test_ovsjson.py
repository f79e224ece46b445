"""The standard-library JSON parser put in place of python-ovs' pure-Python one:
same values, same consumed counts, errors as strings, on whole and chunked input."""
from __future__ import annotations

import json

import ovs.json
import pytest

from reaper.kinds.network import ovsjson as ovsjson

PY_PARSER = ovsjson.ORIGINAL
MESSAGES = [
    '{"id":1,"result":[{"rows":[{"name":"qvo1","external_ids":["map",[["iface-id",'
    '"be000001-0101-4000-8000-000000000001"]]]}]}],"error":null}',
    '{"method":"update2","params":[null,{"Port":{"0a":{"initial":{"name":"a[{b}]\\"c"}}}}],'
    '"id":null}',
    '[1, -2.5e3, true, false, null, "\\u00e9\\ud83d\\ude00", "back\\\\slash", {}, []]',
    '  {"nested": {"a": [[[{"b": "}]\\\\"}]]], "c": 0.125}}',
    '{"unicode":"caf\u00e9 \u2603","empty":""}',
]


def _py_parse(text: str):
    if PY_PARSER is ovsjson.StdlibParser or ovs.json.PARSER == ovs.json.PARSER_C:
        return json.loads(text)
    # python-ovs' class finds itself through the module global (super(Parser, cls)):
    # put it back while it runs, as it was before install().
    saved, ovs.json.Parser = ovs.json.Parser, PY_PARSER
    try:
        p = PY_PARSER()
        p.feed(text)
        return p.finish()
    finally:
        ovs.json.Parser = saved


def _feed_chunked(text: str, size: int):
    p = ovsjson.StdlibParser()
    consumed = 0
    for i in range(0, len(text), size):
        chunk = text[i:i + size]
        n = p.feed(chunk)
        consumed += n
        if p.is_done():
            break
    return p.finish(), consumed


@pytest.mark.parametrize("text", MESSAGES)
@pytest.mark.parametrize("size", [1, 2, 3, 7, 4096])
def test_same_value_as_python_ovs_whole_and_chunked(text, size):
    value, consumed = _feed_chunked(text, size)
    assert value == _py_parse(text) == json.loads(text)
    assert consumed == len(text)


def test_stops_at_the_end_of_the_first_message():
    a, b = MESSAGES[0], MESSAGES[1]
    p = ovsjson.StdlibParser()
    n = p.feed(a + "\n" + b)
    assert n == len(a) and p.is_done() and p.finish() == json.loads(a)
    q = ovsjson.StdlibParser()
    rest = (a + "\n" + b)[n:]
    assert q.feed(rest) == len(rest) and q.finish() == json.loads(b)


@pytest.mark.parametrize("text", ['"top-level string"', "42", "nope"])
def test_a_top_level_scalar_is_an_error_string(text):
    p = ovsjson.StdlibParser()
    p.feed(text)
    assert isinstance(p.finish(), str) and p.is_done()


@pytest.mark.parametrize("text", ['{"a": [1, 2', '{"a": "unterminated', "", "   "])
def test_truncated_input_is_an_error_string(text):
    p = ovsjson.StdlibParser()
    p.feed(text)
    assert isinstance(p.finish(), str)


def test_malformed_inside_is_an_error_string():
    p = ovsjson.StdlibParser()
    p.feed('{"a": 1,, "b": 2}')
    assert p.is_done() and isinstance(p.finish(), str)


def test_from_string_checks_the_trailer_when_installed():
    ovsjson.install()
    assert ovs.json.from_string('{"a": [1]}') == {"a": [1]}
    assert isinstance(ovs.json.from_string('{"a": 1} junk'), str)


def test_install_keeps_the_c_parser_and_is_idempotent():
    ovsjson.install()
    if ovs.json.PARSER == ovs.json.PARSER_C:
        assert ovs.json.Parser is PY_PARSER
    else:
        assert ovs.json.Parser is ovsjson.StdlibParser
    assert ovsjson.install() is False
