#!/usr/bin/env python3
"""Prints an annotated hex dump of one complete hourglass/1 unary call.

The call is TaskService/Get with a 5 s timeout and no metadata, answered with one
GetResponse and OK trailers, preceded by the connection preface and both SETTINGS frames.
The bytes are those inside TLS. Everything is encoded by hand here (protobuf varints, tags
and lengths; 10-byte frame headers) with nothing but the Python standard library, so the
dump in docs/protocol.md ("A unary call, byte by byte") can be regenerated and checked:

    python3 tools/protocol-hexdump.py          # the annotated dump
    python3 tools/protocol-hexdump.py --raw    # just the two byte streams, as hex

Field numbers come from proto/hourglass/rpc/v1/rpc.proto and proto/hourglass/v1/tasks.proto.
"""

import sys

# ---------------------------------------------------------------------------------------------
# Protobuf encoding (proto3, only what this call needs)
# ---------------------------------------------------------------------------------------------

WIRE_VARINT = 0
WIRE_LEN = 2
WIRE_NAMES = {WIRE_VARINT: "varint", WIRE_LEN: "length-delimited"}


def varint(n):
    """Base-128 varint, least significant group first, high bit = more bytes follow."""
    assert n >= 0
    out = bytearray()
    while True:
        group = n & 0x7F
        n >>= 7
        if n:
            out.append(group | 0x80)
        else:
            out.append(group)
            return bytes(out)


# A row of the dump: (bytes, comment, indentation level). A message is a list of rows.


def key_row(number, name, wire_type, level):
    key = varint(number << 3 | wire_type)
    comment = f"key: field {number} ({name}), wire type {wire_type} ({WIRE_NAMES[wire_type]})"
    return (key, comment, level)


def field_varint(number, name, value, level=0, meaning=None):
    """A varint field. proto3 omits a field holding its default (0), so callers skip zeros."""
    assert value != 0, "proto3 does not encode a zero scalar"
    text = f"= {value}" + (f" ({meaning})" if meaning else "")
    return [key_row(number, name, WIRE_VARINT, level), (varint(value), text, level)]


def field_bytes(number, name, data, level=0, shown=None):
    rows = [key_row(number, name, WIRE_LEN, level), (varint(len(data)), f"length = {len(data)}", level)]
    shown = shown if shown is not None else repr(data)
    for i in range(0, len(data), 16):
        rows.append((data[i:i + 16], shown if i == 0 else "", level))
    return rows


def field_string(number, name, text, level=0):
    return field_bytes(number, name, text.encode("utf-8"), level, shown=f'"{text}" (UTF-8)')


def field_message(number, name, rows, level=0):
    body = b"".join(r[0] for r in rows)
    return [key_row(number, name, WIRE_LEN, level), (varint(len(body)), f"length = {len(body)}", level)] + rows


def payload_of(rows):
    return b"".join(r[0] for r in rows)


# ---------------------------------------------------------------------------------------------
# Frames
# ---------------------------------------------------------------------------------------------

FRAME_TYPES = {0: "SETTINGS", 1: "HEADERS", 2: "MESSAGE", 3: "TRAILERS", 4: "RESET",
               5: "CREDIT", 6: "PING", 7: "PONG", 8: "GOAWAY"}
END_STREAM = 0x1
MORE = 0x2
PREFACE = b"HGL1\r\n\r\n"


def flag_names(flags):
    names = [n for bit, n in ((END_STREAM, "END_STREAM"), (MORE, "MORE")) if flags & bit]
    return "|".join(names) if names else "none"


def frame(frame_type, flags, stream_id, rows, title):
    """Returns (title, rows) for one frame: the 10-byte header, then the payload rows."""
    payload = payload_of(rows)
    assert stream_id <= 0x7FFFFFFF
    header = [
        (len(payload).to_bytes(4, "big"), f"payload length = {len(payload)} (u32, big-endian)", 0),
        (bytes([frame_type]), f"type = {frame_type} ({FRAME_TYPES[frame_type]})", 0),
        (bytes([flags]), f"flags = 0x{flags:02x} ({flag_names(flags)})", 0),
        (stream_id.to_bytes(4, "big"), f"stream id = {stream_id} (u32, big-endian; high bit reserved, 0)", 0),
    ]
    if not payload:
        header.append((b"", "(empty payload)", 0))
    body = [(b, c, level + 1) for (b, c, level) in rows]
    return (f"{title}: {FRAME_TYPES[frame_type]}, stream {stream_id}, "
            f"{len(payload)}-byte payload ({10 + len(payload)} bytes in all)", header + body)


# ---------------------------------------------------------------------------------------------
# The call
# ---------------------------------------------------------------------------------------------

METHOD = "/hourglass.v1.TaskService/Get"
USER_ID = "alice"
TASK_ID = "0190d4c2-7a1e-7b3c-9f00-5a3b2c1d0e0f"
TIMEOUT_MICROS = 5 * 1_000_000
TASK_STATUS_SCHEDULED = 1
STREAM_ID = 1  # the client's first stream


def settings_rows():
    # hourglass.rpc.v1.Settings; keepalive_interval_ms (5) is 0 and therefore absent.
    return (field_varint(1, "max_frame_size", 65536)
            + field_varint(2, "max_message_size", 4194304)
            + field_varint(3, "max_concurrent_streams", 1024)
            + field_varint(4, "initial_stream_credit", 64))


def request_headers_rows():
    # hourglass.rpc.v1.RequestHeaders: method = 1, timeout_micros = 2, metadata = 3 (none).
    return (field_string(1, "method", METHOD)
            + field_varint(2, "timeout_micros", TIMEOUT_MICROS, meaning="5 s"))


def get_request_rows():
    # hourglass.v1.GetRequest: user_id = 1, task_id = 2.
    return field_string(1, "user_id", USER_ID) + field_string(2, "task_id", TASK_ID)


def get_response_rows():
    # hourglass.v1.GetResponse: task = 1 (TaskInfo: task_id = 1, task_status = 2).
    task_info = (field_string(1, "task_id", TASK_ID, level=1)
                 + field_varint(2, "task_status", TASK_STATUS_SCHEDULED, level=1, meaning="TASK_STATUS_SCHEDULED"))
    return field_message(1, "task, a hourglass.v1.TaskInfo", task_info)


def trailers_rows():
    # hourglass.rpc.v1.Trailers: code = 1 (0 = OK, absent), message = 2 (empty, absent),
    # metadata = 3 (none). An OK status with no message or metadata is an empty payload.
    return []


def conversation():
    """The call in the order the bytes travel: (direction, title, rows) per unit."""
    c2s, s2c = "client -> server", "server -> client"
    units = []
    units.append((c2s, "connection preface (8 bytes, client only, once)",
                  [(PREFACE, '"HGL1\\r\\n\\r\\n"', 0)]))
    units.append((c2s,) + frame(0, 0, 0, settings_rows(), "client SETTINGS"))
    units.append((s2c,) + frame(0, 0, 0, settings_rows(), "server SETTINGS"))
    units.append((c2s,) + frame(1, 0, STREAM_ID, request_headers_rows(), "request HEADERS (opens the stream)"))
    units.append((c2s,) + frame(2, END_STREAM, STREAM_ID, get_request_rows(),
                                "request MESSAGE, a hourglass.v1.GetRequest, with END_STREAM (half-close)"))
    units.append((s2c,) + frame(2, 0, STREAM_ID, get_response_rows(), "response MESSAGE, a hourglass.v1.GetResponse"))
    units.append((s2c,) + frame(3, 0, STREAM_ID, trailers_rows(), "TRAILERS, status OK (closes the stream)"))
    return units


# ---------------------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------------------

HEX_WIDTH = 16 * 3  # room for 16 bytes as "xx "


def hexbytes(data):
    return " ".join(f"{b:02x}" for b in data)


def print_annotated(units):
    offsets = {}
    for direction, title, rows in units:
        start = offsets.get(direction, 0)
        size = sum(len(r[0]) for r in rows)
        print(f"{direction}  [stream offset {start}..{start + size - 1}]  {title}")
        for data, comment, level in rows:
            indent = "  " * level
            # Long values were split into 16-byte rows already; anything else fits one row.
            print(f"    {indent + hexbytes(data):<{HEX_WIDTH + 4}} {indent}{comment}".rstrip())
        offsets[direction] = start + size
        print()
    for direction in ("client -> server", "server -> client"):
        print(f"total {direction}: {offsets[direction]} bytes")


def streams(units):
    out = {}
    for direction, _, rows in units:
        out.setdefault(direction, bytearray()).extend(b"".join(r[0] for r in rows))
    return out


def print_raw(units):
    for direction, data in streams(units).items():
        print(f"{direction} ({len(data)} bytes):")
        for i in range(0, len(data), 16):
            print(f"  {i:04x}  {hexbytes(data[i:i + 16])}")
        print()


def self_check(units):
    """Re-parses both byte streams to make sure the frames and messages are well formed."""
    def read_varint(buf, i):
        shift = value = 0
        while True:
            b = buf[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, i

    def fields(buf):
        i, out = 0, []
        while i < len(buf):
            key, i = read_varint(buf, i)
            number, wire = key >> 3, key & 7
            if wire == WIRE_VARINT:
                value, i = read_varint(buf, i)
            else:
                assert wire == WIRE_LEN
                length, i = read_varint(buf, i)
                value, i = bytes(buf[i:i + length]), i + length
            out.append((number, value))
        return out

    data = streams(units)
    c2s = bytes(data["client -> server"])
    assert c2s.startswith(PREFACE)
    parsed = {}
    for direction, buf in (("c2s", c2s[len(PREFACE):]), ("s2c", bytes(data["server -> client"]))):
        i, frames = 0, []
        while i < len(buf):
            length = int.from_bytes(buf[i:i + 4], "big")
            ftype, flags = buf[i + 4], buf[i + 5]
            sid = int.from_bytes(buf[i + 6:i + 10], "big")
            frames.append((ftype, flags, sid, buf[i + 10:i + 10 + length]))
            i += 10 + length
        assert i == len(buf)
        parsed[direction] = frames
    settings = dict(fields(parsed["c2s"][0][3]))
    assert settings == {1: 65536, 2: 4194304, 3: 1024, 4: 64}
    headers = dict(fields(parsed["c2s"][1][3]))
    assert headers == {1: METHOD.encode(), 2: TIMEOUT_MICROS}
    request = dict(fields(parsed["c2s"][2][3]))
    assert request == {1: USER_ID.encode(), 2: TASK_ID.encode()} and parsed["c2s"][2][1] == END_STREAM
    response = dict(fields(parsed["s2c"][1][3]))
    assert dict(fields(response[1])) == {1: TASK_ID.encode(), 2: TASK_STATUS_SCHEDULED}
    assert parsed["s2c"][2][:3] == (3, 0, STREAM_ID) and parsed["s2c"][2][3] == b""


def main():
    units = conversation()
    self_check(units)
    if "--raw" in sys.argv[1:]:
        print_raw(units)
    else:
        print_annotated(units)


if __name__ == "__main__":
    main()
