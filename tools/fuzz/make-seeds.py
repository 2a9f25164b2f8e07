#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the hourglass/1 frame fuzzer.

Each seed is raw client-to-server traffic: the preface `HGL1\\r\\n\\r\\n`, then frames of a
10-byte header (u32 BE payload length, u8 type, u8 flags, u32 BE stream id) and a payload.
Protobuf payloads (proto/hourglass/rpc/v1/rpc.proto) are encoded by hand below.

    tools/fuzz/make-seeds.py [output directory]

The default directory is Tests/HourglassRPCTests/Fuzz Corpus, which the test suite replays.
Existing seed-* and reproducer files are overwritten; other files (inputs the fuzzer found)
are left alone.
"""

import os
import struct
import sys

PREFACE = b"HGL1\r\n\r\n"

SETTINGS, HEADERS, MESSAGE, TRAILERS, RESET, CREDIT, PING, PONG, GOAWAY = range(9)
END_STREAM, MORE = 0x1, 0x2


def frame(kind, stream, payload=b"", flags=0, length=None):
    """One frame; `length` overrides the header's payload length (for truncated/oversized)."""
    size = len(payload) if length is None else length
    return struct.pack(">IBBI", size, kind, flags, stream) + payload


# --- protobuf, by hand -------------------------------------------------------------------


def varint(value):
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def pb_varint(number, value):
    return varint(number << 3 | 0) + varint(value)


def pb_bytes(number, data):
    if isinstance(data, str):
        data = data.encode()
    return varint(number << 3 | 2) + varint(len(data)) + data


def settings(max_frame=0, max_message=0, max_streams=0, credit=0, keepalive_ms=0):
    """hourglass.rpc.v1.Settings; zero fields are left out (they mean "the default")."""
    fields = [(1, max_frame), (2, max_message), (3, max_streams), (4, credit), (5, keepalive_ms)]
    return b"".join(pb_varint(n, v) for n, v in fields if v)


def metadata(key, text=None, binary=None):
    body = pb_bytes(1, key)
    body += pb_bytes(2, text) if text is not None else pb_bytes(3, binary or b"")
    return body


def request_headers(method, timeout_micros=0, entries=()):
    body = pb_bytes(1, method)
    if timeout_micros:
        body += pb_varint(2, timeout_micros)
    for entry in entries:
        body += pb_bytes(3, entry)
    return body


def reset(code, message=""):
    return pb_varint(1, code) + (pb_bytes(2, message) if message else b"")


def goaway(last_stream, code=0, message=""):
    body = pb_varint(1, last_stream) if last_stream else b""
    body += pb_varint(2, code) if code else b""
    return body + (pb_bytes(3, message) if message else b"")


def u32(value):
    return struct.pack(">I", value)


# --- the seeds ---------------------------------------------------------------------------

OPEN = PREFACE + frame(SETTINGS, 0)  # a connection that has done its part of the handshake
CALL = request_headers("/x.Y/Z")

SEEDS = {
    "empty": b"",
    "preface-only": PREFACE,
    "preface-truncated": PREFACE[:5],
    "bad-preface-version": b"HGL2\r\n\r\n" + frame(SETTINGS, 0),
    "bad-preface-http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "frames-without-preface": frame(SETTINGS, 0) + frame(HEADERS, 1, CALL) + frame(MESSAGE, 1, b"hi", END_STREAM),
    "unary-call": OPEN + frame(HEADERS, 1, CALL) + frame(MESSAGE, 1, b"hello", END_STREAM),
    "full-settings-fragmented-message": PREFACE
    + frame(SETTINGS, 0, settings(16384, 1024, 2, 1, 1000))
    + frame(HEADERS, 1, request_headers("/hourglass.v1.TaskService/Schedule", 0, [metadata("x-id", text="7"), metadata("trace-bin", binary=b"\x00\x01")]))
    + frame(MESSAGE, 1, b"abc", MORE)
    + frame(MESSAGE, 1, b"def", MORE)
    + frame(MESSAGE, 1, b"g")
    + frame(CREDIT, 1, u32(3))
    + frame(PING, 0, b"12345678")
    + frame(PONG, 0, b"87654321")
    + frame(MESSAGE, 1, b"", END_STREAM),
    "headers-end-stream-then-reset": OPEN + frame(HEADERS, 1, CALL, END_STREAM) + frame(RESET, 1, reset(1, "cancelled")) + frame(MESSAGE, 1, b"late"),
    "deadline": OPEN + frame(HEADERS, 1, request_headers("/x.Y/Z", timeout_micros=1500)) + frame(MESSAGE, 1, b"m"),
    "streams-and-goaway": OPEN
    + b"".join(frame(HEADERS, s, CALL) for s in (1, 3, 5, 7))
    + frame(RESET, 3, reset(8))
    + frame(MESSAGE, 5, b"", END_STREAM)
    + frame(GOAWAY, 0, goaway(7, 14, "bye")),
    "oversized-frame-header": OPEN + frame(MESSAGE, 1, length=16385),
    "oversized-frame-max-length": OPEN + frame(HEADERS, 1, length=0xFFFFFFFF),
    "truncated-payload": OPEN + frame(HEADERS, 1, CALL, length=len(CALL) + 9),
    "truncated-header": OPEN + frame(HEADERS, 1, CALL)[:6],
    "unknown-frame-types": OPEN + frame(0x2A, 0, b"future") + frame(0xFF, 3, b"\x00" * 4, 0xFF) + frame(HEADERS, 1, CALL),
    "reserved-stream-id-bit": OPEN + frame(HEADERS, 0x80000001, CALL),
    "control-frames-for-unknown-streams": OPEN + frame(RESET, 5, reset(1)) + frame(CREDIT, 7, u32(1)) + frame(MESSAGE, 9, b"x"),
    "goaway-then-headers": OPEN + frame(GOAWAY, 0, goaway(0)) + frame(HEADERS, 1, CALL),
    "goaway-on-stream": OPEN + frame(HEADERS, 1, CALL) + frame(GOAWAY, 3, goaway(1)),
    "headers-before-settings": PREFACE + frame(HEADERS, 1, CALL) + frame(SETTINGS, 0),
    "settings-twice": OPEN + frame(SETTINGS, 0),
    "settings-on-stream": PREFACE + frame(SETTINGS, 1),
    "settings-out-of-range": PREFACE + frame(SETTINGS, 0, settings(max_frame=100)),
    "settings-not-protobuf": PREFACE + frame(SETTINGS, 0, b"\xff\xff\xff\xff\xff"),
    "headers-bad-stream-ids": OPEN + frame(HEADERS, 3, CALL) + frame(HEADERS, 1, CALL) + frame(HEADERS, 2, CALL),
    "headers-method-without-slash": OPEN + frame(HEADERS, 1, request_headers("x.Y/Z")) + frame(MESSAGE, 1, b"x"),
    "headers-twice": OPEN + frame(HEADERS, 1, CALL) + frame(HEADERS, 1, CALL),
    "message-more-and-end-stream": OPEN + frame(HEADERS, 1, CALL) + frame(MESSAGE, 1, b"x", MORE | END_STREAM),
    "message-after-end-stream": OPEN + frame(HEADERS, 1, CALL, END_STREAM) + frame(MESSAGE, 1, b"x"),
    "credit-exceeded": OPEN + frame(HEADERS, 1, CALL) + frame(MESSAGE, 1, b"m") * 65,
    "credit-malformed": OPEN + frame(HEADERS, 1, CALL) + frame(CREDIT, 1, u32(0)) + frame(CREDIT, 1, u32(0xFFFFFFFF)) + frame(CREDIT, 1, b"\x00\x01"),
    "trailers-from-client": OPEN + frame(HEADERS, 1, CALL) + frame(TRAILERS, 1, pb_varint(1, 0)),
    "ping-malformed": OPEN + frame(PING, 0, b"1234") + frame(PING, 1, b"12345678"),
}

# Minimal reproducers of crashes the fuzzer found, written under their own names. The replay
# test lists the ones that still crash in FuzzCorpusReplayTests.knownCrashes.
REPRODUCERS = {
    # A RESET without a code (0, OK) for an open stream: receiveReset builds RPCError(code: .ok),
    # whose precondition traps.
    "crash-reset-code-ok": OPEN + frame(HEADERS, 1, CALL) + frame(RESET, 1),
}


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    default = os.path.join(here, "..", "..", "Tests", "HourglassRPCTests", "Fuzz Corpus")
    out = os.path.normpath(sys.argv[1] if len(sys.argv) > 1 else default)
    os.makedirs(out, exist_ok=True)
    for name, data in SEEDS.items():
        with open(os.path.join(out, "seed-" + name), "wb") as f:
            f.write(data)
    for name, data in REPRODUCERS.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(data)
    print(f"wrote {len(SEEDS)} seeds and {len(REPRODUCERS)} crash reproducers to {out}")


if __name__ == "__main__":
    main()
