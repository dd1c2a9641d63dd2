"""JSON-RPC robustness on top of pygls' LanguageServerProtocol.

pygls leaves some bad input unanswered or answers it with a traceback; the protocol says:
- a body that is not JSON:                  -32700 ParseError, id null;
- JSON that is not a request/notification:  -32600 InvalidRequest (id null when it has none);
- params that do not fit the method:        -32602 InvalidParams, with the request's id (pygls
                                            loses the id, so the client would wait forever);
- a request before `initialize`:            -32002 ServerNotInitialized; notifications dropped;
- a request after `shutdown`:               -32600 InvalidRequest.
The server keeps serving after each of these.

The document notifications skip pygls' own workspace: the server keeps its documents in
`documents.DocumentStore` (LSP line terminators, lazily built line index).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass

from lsprotocol import types
from pygls.exceptions import JsonRpcException
from pygls.protocol import LanguageServerProtocol, lsp_method

log = logging.getLogger(__name__)

PARSE_ERROR, INVALID_REQUEST, INVALID_PARAMS = -32700, -32600, -32602
SERVER_NOT_INITIALIZED, REQUEST_FAILED = -32002, -32803


@dataclass
class BadMessage:
    """A message that could not be structured: answered with `code` if it is a request."""

    id: int | str | None
    method: str | None
    code: int
    message: str


class DllmProtocol(LanguageServerProtocol):
    def __init__(self, server, converter):
        super().__init__(server, converter)
        self.initialize_received = False

    def send_error(self, msg_id, code: int, message: str):
        """Answer a request (id None for unidentifiable ones) with an error."""
        self._send_data({"jsonrpc": "2.0", "id": msg_id, "error": {"code": code, "message": message}})

    def structure_message(self, data):
        try:
            return super().structure_message(data)
        except JsonRpcException as e:
            method = data.get("method") if isinstance(data, dict) else None
            cause = e.__cause__ or e
            detail = str(cause).splitlines()[0] if str(cause) else type(cause).__name__
            return BadMessage(id=data.get("id") if "id" in data else None, method=method,
                              code=INVALID_PARAMS if method else INVALID_REQUEST,
                              message=f"invalid params for {method or 'message'}: {detail}")

    def handle_message(self, message):
        if isinstance(message, BadMessage):
            if message.id is not None:
                self.send_error(message.id, message.code, message.message)
            else:
                log.warning("dropped a notification: %s", message.message)
            return
        if not hasattr(message, "jsonrpc"):  # a JSON value that is not an LSP message
            msg_id = message.get("id") if isinstance(message, dict) else None
            if isinstance(msg_id, (dict, list, bool, float)):
                msg_id = None
            self.send_error(msg_id, INVALID_REQUEST,
                            'invalid request: expected a JSON-RPC 2.0 object with "jsonrpc": "2.0" and "method"')
            return
        method = getattr(message, "method", None)
        is_request = method is not None and hasattr(message, "id")
        if message.jsonrpc != "2.0":
            if is_request:
                self.send_error(message.id, INVALID_REQUEST, f'invalid request: jsonrpc must be "2.0", not {message.jsonrpc!r}')
            return
        if not self.initialize_received and method not in (types.INITIALIZE, types.EXIT):
            if is_request:
                self.send_error(message.id, SERVER_NOT_INITIALIZED,
                                f"{method}: the server is not initialized; send `initialize` first")
            elif method is not None:
                log.warning("dropped %s: it came before initialize", method)
            return
        if is_request and method == types.INITIALIZE and self.initialize_received:
            self.send_error(message.id, INVALID_REQUEST, "initialize may only be sent once")
            return
        if is_request and self._shutdown and method != types.EXIT:
            self.send_error(message.id, INVALID_REQUEST, f"{method}: the server is shutting down")
            return
        if method == types.INITIALIZE:
            self.initialize_received = True
        super().handle_message(message)

    # --- documents go to the server's own store (see documents.py), not pygls' workspace --------

    @lsp_method(types.TEXT_DOCUMENT_DID_OPEN)
    def lsp_text_document__did_open(self, params):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_OPEN)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CHANGE)
    def lsp_text_document__did_change(self, params):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CHANGE)) is not None:
            yield handler, (params,), None

    @lsp_method(types.TEXT_DOCUMENT_DID_CLOSE)
    def lsp_text_document__did_close(self, params):
        if (handler := self.fm.features.get(types.TEXT_DOCUMENT_DID_CLOSE)) is not None:
            yield handler, (params,), None


def is_parse_error(error: BaseException) -> bool:
    return isinstance(error, (json.JSONDecodeError, UnicodeDecodeError))
