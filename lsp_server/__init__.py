"""The language server: LSP 3.18 inline completions from the diffusion core (pygls 2, lsprotocol).

Handlers (server.py, protocol.py) only translate between lsprotocol types and plain dataclasses;
the logic lives in modules that know nothing of LSP: engine.py (one request, end to end),
postprocess.py, syntax.py (tree-sitter), debounce.py, documents.py/positions.py, settings.py,
and the core behind core_client.CoreClient (inprocess.py until the core daemon exists).
"""
