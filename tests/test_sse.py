"""SSE framing: the table of docs/architecture.md, difference 5 (every line terminator
splits, so a payload cannot inject fields), sseraw, chunk framing; hypothesis properties."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sse_offload.sse import KEEPALIVE, Mode, frame, frame_raw, frame_sse, http_chunk

FRAMING_TABLE = [
    (b"foobar", b"data: foobar\n\n"),
    (b"foobar\nfoobar2", b"data: foobar\ndata: foobar2\n\n"),
    (b"foo\n", b"data: foo\ndata: \n\n"),
    (b"foo\r\nbar", b"data: foo\ndata: bar\n\n"),
    (b"a\rb", b"data: a\ndata: b\n\n"),
    (b"", b""),
    # rows where the original plugin frames the same way (it split on \n only)
    (b"\n", b"data: \ndata: \n\n"),
    (b"a\n\nb", b"data: a\ndata: \ndata: b\n\n"),
    (b" x", b"data:  x\n\n"),
    (b"\x00\xff\xfe", b"data: \x00\xff\xfe\n\n"),
]


@pytest.mark.parametrize(("payload", "wire"), FRAMING_TABLE)
def test_sse_framing_matches_the_architecture_table(payload: bytes, wire: bytes) -> None:
    assert frame_sse(payload) == wire


def test_raw_mode_passes_payload_verbatim() -> None:
    assert frame_raw(b"a\r\nb\n\n") == b"a\r\nb\n\n"
    assert frame([b"x", b"", b"y\n"], Mode.RAW) == b"xy\n"


def test_several_payloads_are_joined_and_empty_ones_dropped() -> None:
    assert frame([b"1", b"", b"2"], Mode.SSE) == b"data: 1\n\ndata: 2\n\n"


def test_http_chunk_is_hex_size_crlf_body_crlf() -> None:
    assert http_chunk(b"x" * 26) == b"1a\r\n" + b"x" * 26 + b"\r\n"
    assert http_chunk(KEEPALIVE) == b"3\r\n:\n\n\r\n"


def _parse_event_data(wire: bytes) -> bytes:
    """What a spec-compliant EventSource reassembles as e.data from one event."""
    assert wire.endswith(b"\n\n")
    lines = wire[:-2].split(b"\n")
    assert all(line.startswith(b"data: ") for line in lines)
    return b"\n".join(line[len(b"data: ") :] for line in lines)


@given(st.binary(min_size=1))
def test_framed_payload_is_one_event_of_data_lines_only(payload: bytes) -> None:
    wire = frame_sse(payload)
    # No payload can inject another field or end the event early.
    body = wire[:-2]
    assert b"\r" not in wire
    assert b"\n\n" not in body
    normalised = payload.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    assert _parse_event_data(wire) == normalised
