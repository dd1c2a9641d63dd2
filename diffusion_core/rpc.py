"""msgpack-rpc framing, shared by the core daemon and its clients (no torch, no asyncio).

The messages are Neovim's msgpack-rpc: request `[0, msgid, method, params]`, response
`[1, msgid, error, result]`, notification `[2, method, params]`. `params` is an array holding one
map (`[{"uri": ..., ...}]`; `[]` means `{}`). An error is a map `{"code": str, "message": str}`.

A stream is a sequence of msgpack objects without length prefixes, so a frame is "whatever the
unpacker decodes next". Bytes that are not msgpack cannot be resynchronised: `Reader.feed` raises
`FrameError` and the connection is answered once and closed. A decodable object that is not a
message is answered with an error and the connection goes on.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

MAX_FRAME = 8 * 1024 * 1024  # bytes; a prompt window is ~20 KB, so this only stops abuse

REQUEST, RESPONSE, NOTIFICATION = 0, 1, 2

# error codes (the `code` of an error map)
PARSE_ERROR = "parse_error"  # bytes that are not msgpack, or a frame over MAX_FRAME
INVALID_REQUEST = "invalid_request"  # msgpack, but not a msgpack-rpc message
METHOD_NOT_FOUND = "method_not_found"
INVALID_PARAMS = "invalid_params"
UNAUTHORIZED = "unauthorized"  # TCP: no token or a wrong one
CANCELLED = "cancelled"  # by the client, or superseded by a newer request for the document
UNAVAILABLE = "unavailable"  # no model loaded (the message says why and how to fix it)
INTERNAL = "internal"


class FrameError(Exception):
    """The byte stream cannot be decoded (not msgpack, or a frame larger than MAX_FRAME)."""


class RpcError(Exception):
    """An error to answer with: `code` (one of the constants above) and a one-line message."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code, self.message = code, message

    def to_wire(self) -> dict:
        return {"code": self.code, "message": self.message}


@dataclass
class Message:
    kind: int  # REQUEST, RESPONSE or NOTIFICATION
    msgid: int | None = None
    method: str = ""
    params: dict | None = None  # the one map of a request's or notification's params
    error: object = None  # a response's
    result: object = None


def request(msgid: int, method: str, params: dict | None = None) -> bytes:
    return msgpack.packb([REQUEST, msgid, method, [params or {}]], use_bin_type=True)


def response(msgid: int | None, error: dict | None = None, result=None) -> bytes:
    return msgpack.packb([RESPONSE, msgid, error, result], use_bin_type=True)


def notification(method: str, params: dict | None = None) -> bytes:
    return msgpack.packb([NOTIFICATION, method, [params or {}]], use_bin_type=True)


class Reader:
    """Incremental decoder: feed it bytes, get back the complete objects."""

    def __init__(self, max_frame: int = MAX_FRAME):
        self._u = msgpack.Unpacker(raw=False, max_buffer_size=max_frame, strict_map_key=False)

    def feed(self, data: bytes) -> list:
        try:
            self._u.feed(data)
            return list(self._u)
        except msgpack.BufferFull:
            raise FrameError(f"frame larger than {MAX_FRAME} bytes") from None
        except (ValueError, msgpack.UnpackException, msgpack.ExtraData) as e:  # FormatError, StackError
            raise FrameError(f"not msgpack ({type(e).__name__})") from None


def _params(raw) -> dict:
    if raw is None or raw == []:
        return {}
    if isinstance(raw, list) and len(raw) == 1 and isinstance(raw[0], dict):
        return raw[0]
    raise RpcError(INVALID_PARAMS, "params must be an array holding one map")


def parse(obj) -> Message:
    """The message an object decodes to; RpcError(INVALID_REQUEST/INVALID_PARAMS) with the id
    when there is one (`.msgid` is set on the exception)."""
    msgid = obj[1] if isinstance(obj, list) and len(obj) == 4 and obj[0] == REQUEST and isinstance(obj[1], int) else None
    try:
        if not isinstance(obj, list) or not obj or obj[0] not in (REQUEST, RESPONSE, NOTIFICATION) or isinstance(obj[0], bool):
            raise RpcError(INVALID_REQUEST, "expected a msgpack-rpc message: [0, id, method, params], "
                                            "[1, id, error, result] or [2, method, params]")
        kind = obj[0]
        if kind == REQUEST:
            if len(obj) != 4 or not isinstance(obj[1], int) or isinstance(obj[1], bool) or not isinstance(obj[2], str):
                raise RpcError(INVALID_REQUEST, "a request is [0, id (int), method (str), params]")
            return Message(REQUEST, msgid=obj[1], method=obj[2], params=_params(obj[3]))
        if kind == NOTIFICATION:
            if len(obj) != 3 or not isinstance(obj[1], str):
                raise RpcError(INVALID_REQUEST, "a notification is [2, method (str), params]")
            return Message(NOTIFICATION, method=obj[1], params=_params(obj[2]))
        if len(obj) != 4 or not isinstance(obj[1], int):
            raise RpcError(INVALID_REQUEST, "a response is [1, id (int), error, result]")
        return Message(RESPONSE, msgid=obj[1], error=obj[2], result=obj[3])
    except RpcError as e:
        e.msgid = msgid
        raise
