"""The load clients' readers: HTTP/1.1 framing, EventSource, ws+meta frames, post ids."""

from __future__ import annotations

import asyncio

import orjson
import pytest

from threadcast.bench.http1 import (
    ChunkedDecoder,
    Endpoint,
    HttpError,
    parse_head,
    read_body,
    read_head,
    request,
    stream_body,
)
from threadcast.bench.protocols import ProtocolError, SseParser, meta_frame_payload, post_id, prime_message

CHUNKED = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n"


def reader_of(data: bytes) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    return reader


@pytest.mark.parametrize("piece", [1, 2, 3, 5, 64])
def test_chunked_decoding_does_not_depend_on_how_the_bytes_arrive(piece):
    decoder = ChunkedDecoder()
    body = b"".join(decoder.feed(CHUNKED[i : i + piece]) for i in range(0, len(CHUNKED), piece))
    assert body == b"hello, world"
    assert decoder.done


def test_a_bad_chunk_size_is_an_error():
    with pytest.raises(HttpError, match="chunk size"):
        ChunkedDecoder().feed(b"zz\r\nhello\r\n")


def test_request_and_head():
    raw = request("POST", "/pub/thread:1", Endpoint.parse("http://127.0.0.1:8080"), {"X-A": "b"}, b"{}")
    assert raw == b"POST /pub/thread:1 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\nX-A: b\r\nContent-Length: 2\r\n\r\n{}"
    head = parse_head(b"HTTP/1.1 304 Not Modified\r\nETag: 12\r\nX-Empty:")
    assert (head.status, head.headers, head.bodyless) == (304, {"etag": "12", "x-empty": ""}, True)
    with pytest.raises(HttpError):
        parse_head(b"SSH-2.0-OpenSSH")
    with pytest.raises(ValueError):
        Endpoint.parse("https://example.test")


async def test_bodies_by_length_by_chunks_and_to_the_end():
    reader = reader_of(
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabcHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + CHUNKED
    )
    assert await read_body(reader, await read_head(reader)) == b"abc"
    assert await read_body(reader, await read_head(reader)) == b"hello, world"
    with pytest.raises(HttpError):
        await read_head(reader)
    stream = reader_of(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n: hi\n\ndata: 1\n\n")
    assert b"".join([piece async for piece in stream_body(stream, await read_head(stream))]) == b": hi\n\ndata: 1\n\n"


async def test_a_body_cut_short_is_an_error():
    reader = reader_of(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
    with pytest.raises(HttpError):
        await read_body(reader, await read_head(reader))


def test_eventsource_events_across_reads_without_comments():
    parser = SseParser()
    assert parser.feed(b': hi\n\nid: 1:1\ndata: {"a"') == []
    assert parser.feed(b":1}\n\n: ping\n\nid: 1:2\r\ndata: x\r\ndata: y\r\n\r\nid: 1:3\n") == [b'{"a":1}', b"x\ny"]
    assert parser.feed(b"data:z\n\n") == [b"z"]


def test_meta_frames_and_post_ids():
    payload = orjson.dumps(
        {"id": "e1", "type": "post.created", "channel": "thread:1", "ts": 1.0, "seq": 3, "data": {"id": 42}}
    )
    assert meta_frame_payload(b"id: 1:7\ncontent-type: application/json\n\n" + payload) == payload
    assert post_id(payload) == 42
    with pytest.raises(ProtocolError):
        meta_frame_payload(b"no blank line")
    for bad in (b"not json", b'{"data": {}}', b"[1]"):
        with pytest.raises(ProtocolError):
            post_id(bad)


def test_priming_messages_carry_no_real_post_id():
    assert post_id(prime_message("thread:1", 1)) == -1
    assert post_id(prime_message("thread:1", 0)) == 0
