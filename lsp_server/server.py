"""The pygls language server: handlers translate lsprotocol types to the engine's dataclasses.

Capabilities: `inlineCompletionProvider` (passed explicitly: pygls needs the options object),
incremental text sync, the position encoding negotiated from the client's offer (UTF-16 by
default), `executeCommandProvider` with `dllm.accept` (each item's command) and
`dllm.telemetry`. Notifications to the client: `dllm/status` ({state: "loading" | "ready" |
"busy" | "error" | "disabled", message, fix}) and `$/progress` while the model loads (and for
requests that carry a workDoneToken).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Callable

from lsprotocol import types as lsp
from pygls.capabilities import ServerCapabilitiesBuilder
from pygls.exceptions import JsonRpcException, JsonRpcInternalError
from pygls.lsp.server import LanguageServer

from .. import __version__
from ..errors import DllmError
from .core_client import CompletionCancelled, CoreClient
from .fix import actions_at as fix_actions_at
from .fix import find_span as fix_find_span
from .fix import repair as fix_repair
from . import refactor as refactor_actions
from .syntax import language_id_for
from .documents import DocumentStore, TextChange, UnknownDocument
from .engine import CompletionEngine, InlineQuery
from .positions import PositionError
from .protocol import INVALID_PARAMS, PARSE_ERROR, REQUEST_FAILED, DllmProtocol, is_parse_error
from .settings import Settings, parse_settings

log = logging.getLogger(__name__)

STATUS = "dllm/status"
ACCEPT, TELEMETRY = "dllm.accept", "dllm.telemetry"
CoreFactory = Callable[[Settings], CoreClient]


def default_core_factory(checkpoint: str | None = None, device: str = "auto", threads: int | None = None) -> CoreFactory:
    """The core of `settings.core_address`: in this process, or the core daemon on a socket (started
    when none runs); the `checkpoint` setting wins over the command line's."""
    def make(settings: Settings) -> CoreClient:
        dev = settings.device if settings.device != "auto" else device
        if settings.core_address != "inprocess":
            from .core_client import SocketCore

            path = None if settings.core_address == "auto" else settings.core_address[len("unix:"):]
            return SocketCore(path, checkpoint=settings.checkpoint or checkpoint, device=dev, threads=threads)
        from .inprocess import InProcessCore

        return InProcessCore(checkpoint=settings.checkpoint or checkpoint, device=dev, threads=threads)
    return make


class DllmServer(LanguageServer):
    def __init__(self, core_factory: CoreFactory):
        super().__init__("dllm-ls", __version__, protocol_cls=DllmProtocol,
                         text_document_sync_kind=lsp.TextDocumentSyncKind.Incremental)
        self.core_factory = core_factory
        self.docs = DocumentStore()
        self.settings = Settings()
        self.core: CoreClient | None = None
        self.engine: CompletionEngine | None = None
        self._status: tuple | None = None
        self._client_initialized = False
        self._loading: asyncio.Task | None = None
        self._progress_cancel: dict[str, Callable[[], None]] = {}  # token -> stop the work it reports on

    # --- status ------------------------------------------------------------------------------

    def send_status(self, state: str, message: str = "", fix: str = ""):
        """`dllm/status`, only when it changes (and only once the client is initialized)."""
        if state == "ready" and not message and self.core is not None:
            h = self.core.health()
            message = f"model {h.model} on {h.device}"
        status = (state, message, fix)
        if status == self._status or not self._client_initialized:
            return
        self._status = status
        self.protocol.notify(STATUS, {"state": state, "message": message, "fix": fix})
        if state == "error":
            self.window_log_message(lsp.LogMessageParams(type=lsp.MessageType.Error,
                                                         message=f"dllm-ls: {message}. Fix: {fix}" if fix else f"dllm-ls: {message}"))

    def report_server_error(self, error, source):
        """Errors outside a request: a parse error is answered (-32700); others are logged."""
        if is_parse_error(error):
            self.protocol.send_error(None, PARSE_ERROR, f"parse error: the message is not valid JSON ({error})")
            return
        log.warning("%s: %s", type(error).__name__, str(error).splitlines()[0] if str(error) else "")

    # --- the core ------------------------------------------------------------------------------

    def start_core(self):
        """(Re)start the core for the current settings, and report when its model is ready."""
        old = self.core
        self.core = self.core_factory(self.settings)
        if self.engine is None:
            self.engine = CompletionEngine(self.core, self.settings, on_status=self.send_status)
        else:
            self.engine.core = self.core
        if old is not None:
            asyncio.ensure_future(old.close())
        if self._client_initialized:
            self._loading = asyncio.ensure_future(self.watch_loading())

    async def watch_loading(self):
        core = self.core
        token = None
        self.send_status("loading", "loading the model")
        try:
            if _client_has(self.client_capabilities, "window", "work_done_progress"):
                token = f"dllm-load-{uuid.uuid4()}"
                await self.work_done_progress.create_async(token)
                self.work_done_progress.begin(token, lsp.WorkDoneProgressBegin(title="dllm-ls", message="loading the model"))
        except Exception as e:  # a client that refuses progress still gets dllm/status
            log.info("no progress: %s", e)
            token = None
        health = await core.wait_ready()
        if token is not None:
            self.work_done_progress.end(token, lsp.WorkDoneProgressEnd(
                message="model ready" if health.state == "ready" else f"model not loaded: {health.message}"))
            self.work_done_progress.tokens.pop(token, None)
        if core is not self.core:
            return
        if not self.settings.enable:
            self.send_status("disabled", "inline completions are disabled (dllm.enable = false)")
        elif health.state == "ready":
            if not self.engine.busy:  # else the engine reports "ready" when its request is done
                self.send_status("ready")
        else:
            self.send_status("error", health.message, health.fix)

    def apply_settings(self, raw, *, restart: bool = True):
        new, warnings = parse_settings(raw, self.settings)
        if warnings:
            self.window_show_message(lsp.ShowMessageParams(type=lsp.MessageType.Warning,
                                                           message="dllm-ls: " + "; ".join(warnings)))
        old, self.settings = self.settings, new
        if self.engine is not None:
            self.engine.configure(new)
        if restart and (old.checkpoint, old.device, old.core_address) != (new.checkpoint, new.device, new.core_address) \
                and self.core is not None:
            self.start_core()
        elif old.enable != new.enable and self.core is not None:
            if not new.enable:
                self.send_status("disabled", "inline completions are disabled (dllm.enable = false)")
            else:
                self._loading = asyncio.ensure_future(self.watch_loading())


def _client_has(caps, *path) -> bool:
    node = caps
    for name in path:
        node = getattr(node, name, None)
        if node is None:
            return False
    return bool(node)


def _request_guard(fn):
    """DllmErrors become RequestFailed (-32803) with their one-line message; anything unexpected
    an InternalError without a traceback (the traceback goes to the server log)."""
    @functools.wraps(fn)
    async def wrapper(*args):
        try:
            return await fn(*args)
        except (JsonRpcException, asyncio.CancelledError):
            raise
        except PositionError as e:
            raise JsonRpcException(code=INVALID_PARAMS, message=str(e)) from None
        except DllmError as e:
            raise JsonRpcException(code=REQUEST_FAILED, message=str(e)) from None
        except Exception as e:
            log.exception("internal error in %s", fn.__name__)
            raise JsonRpcInternalError(message=f"dllm-ls internal error ({type(e).__name__}: {e}); "
                                       "see the server log (--log-file)") from None
    return wrapper


def _notification_guard(fn):
    @functools.wraps(fn)
    def wrapper(*args):
        try:
            return fn(*args)
        except DllmError as e:
            log.warning("%s", e)
        except Exception:
            log.exception("internal error in %s", fn.__name__)
    return wrapper


def _range(r: lsp.Range | None):
    return None if r is None else ((r.start.line, r.start.character), (r.end.line, r.end.character))


def create_server(core_factory: CoreFactory | None = None) -> DllmServer:
    """The server, its handlers registered; `core_factory` makes the core from the settings."""
    ls = DllmServer(core_factory or default_core_factory())

    @ls.feature(lsp.INITIALIZE)
    def initialize(params: lsp.InitializeParams):
        # the encoding pygls advertises (negotiate_encoding makes the same choice; a test checks it)
        chosen = ServerCapabilitiesBuilder.choose_position_encoding(params.capabilities)
        ls.docs.encoding = getattr(chosen, "value", chosen)
        ls.apply_settings(params.initialization_options, restart=False)
        declared = _client_has(params.capabilities, "text_document", "inline_completion")
        if not (declared or ls.settings.inline_completion):
            ls.protocol.fm.feature_options[lsp.TEXT_DOCUMENT_INLINE_COMPLETION] = None  # not advertised
            ls.window_log_message(lsp.LogMessageParams(type=lsp.MessageType.Info, message=(
                "dllm-ls: this client does not declare textDocument.inlineCompletion; a plugin that sends "
                "the request itself can opt in with initializationOptions {\"dllm\": {\"inlineCompletion\": true}}")))
        ls.start_core()

    @ls.feature(lsp.INITIALIZED)
    async def initialized(params: lsp.InitializedParams):
        ls._client_initialized = True
        ls._loading = asyncio.ensure_future(ls.watch_loading())
        if _client_has(ls.client_capabilities, "workspace", "configuration"):
            await pull_configuration()

    async def pull_configuration():
        try:
            got = await ls.workspace_configuration_async(lsp.ConfigurationParams(
                items=[lsp.ConfigurationItem(section="dllm")]))
        except Exception as e:
            log.info("workspace/configuration failed: %s", e)
            return
        if got and isinstance(got[0], dict):
            ls.apply_settings(got[0])

    @ls.feature(lsp.WORKSPACE_DID_CHANGE_CONFIGURATION)
    @_notification_guard
    def did_change_configuration(params: lsp.DidChangeConfigurationParams):
        if params.settings in (None, {}) and _client_has(ls.client_capabilities, "workspace", "configuration"):
            asyncio.ensure_future(pull_configuration())  # the client wants us to pull
        else:
            ls.apply_settings(params.settings)

    @ls.feature(lsp.TEXT_DOCUMENT_DID_OPEN)
    @_notification_guard
    def did_open(params: lsp.DidOpenTextDocumentParams):
        d = params.text_document
        ls.docs.open(d.uri, d.text, d.version, d.language_id)

    @ls.feature(lsp.TEXT_DOCUMENT_DID_CHANGE)
    @_notification_guard
    def did_change(params: lsp.DidChangeTextDocumentParams):
        changes = [TextChange(range=_range(getattr(c, "range", None)), text=c.text) for c in params.content_changes]
        ls.docs.change(params.text_document.uri, params.text_document.version, changes)
        ls.engine.keystroke(params.text_document.uri)

    @ls.feature(lsp.TEXT_DOCUMENT_DID_CLOSE)
    @_notification_guard
    def did_close(params: lsp.DidCloseTextDocumentParams):
        ls.docs.close(params.text_document.uri)
        ls.engine.forget(params.text_document.uri)

    @ls.feature(lsp.TEXT_DOCUMENT_INLINE_COMPLETION, lsp.InlineCompletionOptions())
    @_request_guard
    async def inline_completion(params: lsp.InlineCompletionParams):
        t0 = time.perf_counter()
        doc = ls.docs.get(params.text_document.uri)
        enc = ls.docs.encoding
        index = doc.index  # positions of this version, even if the document changes meanwhile
        pos = params.position
        offset = index.offset(pos.line, pos.character, enc)
        selected = None
        info = params.context.selected_completion_info
        if info is not None:
            s = index.offset(info.range.start.line, info.range.start.character, enc)
            e = index.offset(info.range.end.line, info.range.end.character, enc)
            if s <= offset and e >= s:
                selected = (s, e, info.text)
        query = InlineQuery(uri=doc.uri, text=index.text, offset=offset, language_id=doc.language_id,
                            eol=doc.eol, invoked=params.context.trigger_kind == lsp.InlineCompletionTriggerKind.Invoked,
                            selected=selected)
        token = params.work_done_token
        if token is not None:
            ls.work_done_progress.begin(token, lsp.WorkDoneProgressBegin(title="dllm-ls", message="completing"))
        try:
            suggestions = await ls.engine.complete(query)
        finally:
            if token is not None:
                ls.work_done_progress.end(token, lsp.WorkDoneProgressEnd())
                ls.work_done_progress.tokens.pop(token, None)
        items = []
        for sug in suggestions:
            start, end = index.position(sug.start, enc), index.position(sug.end, enc)
            items.append(lsp.InlineCompletionItem(
                insert_text=sug.text,
                range=lsp.Range(start=lsp.Position(*start), end=lsp.Position(*end)),
                command=lsp.Command(title="dllm-ls: accepted", command=ACCEPT,
                                    arguments=[{"id": sug.id, "uri": doc.uri, "length": len(sug.text),
                                                "mode": sug.mode, "cached": sug.cached}])))
        # the handler's own time (the engine, tree-sitter, positions), beside the core's
        ls.engine.telemetry.last_core["handler_ms"] = (time.perf_counter() - t0) * 1000
        return lsp.InlineCompletionList(items=items)

    def _lf_to_doc(index, lf_text: str, off: int) -> tuple[int, int]:
        """An offset of the LF-normalised text -> an LSP position of the document (any EOL)."""
        line = lf_text.count("\n", 0, off)
        col = off - (lf_text.rfind("\n", 0, off) + 1)
        start, _ = index.line_bounds(line)
        return index.position(start + col, ls.docs.encoding)

    @ls.feature(lsp.TEXT_DOCUMENT_CODE_ACTION,
                lsp.CodeActionOptions(code_action_kinds=[lsp.CodeActionKind.QuickFix,
                                                         lsp.CodeActionKind.RefactorRewrite,
                                                         refactor_actions.KIND_REPAIR_FILE],
                                      resolve_provider=True))
    @_request_guard
    async def code_action(params: lsp.CodeActionParams):
        """Actions without edits (resolve computes them): the repair actions ("Fix syntax error",
        "Fix this function") and the whole-file ones ("Propagate this edit", "Repair this file")."""
        only = [str(getattr(k, "value", k)) for k in (params.context.only or [])]

        def wanted(kind: str) -> bool:
            return not only or any(kind == o or kind.startswith(o + ".") for o in only)

        doc = ls.docs.get(params.text_document.uri)
        index = doc.index
        pos = params.range.start
        offset = index.offset(pos.line, pos.character, ls.docs.encoding)
        language = doc.language_id or language_id_for(doc.uri)
        out = []
        if wanted(lsp.CodeActionKind.QuickFix.value):
            lf = index.text[:offset].replace("\r\n", "\n")
            for a in fix_actions_at(index.text.replace("\r\n", "\n"), len(lf), language):
                out.append(lsp.CodeAction(title=f"dllm-ls: {a.title}", kind=lsp.CodeActionKind.QuickFix,
                                          data={"uri": doc.uri, "line": pos.line, "character": pos.character,
                                                "title": a.title}))
        invoked = params.context.trigger_kind != lsp.CodeActionTriggerKind.Automatic
        for a in refactor_actions.actions_at(index.text, doc.history, pos.line, params.range.end.line,
                                             language, invoked):
            if wanted(a.kind):
                data = {"uri": doc.uri, "action": a.action, "title": a.title}
                if a.edit is not None:
                    data["edit"] = a.edit.id
                out.append(lsp.CodeAction(title=f"dllm-ls: {a.title}", kind=a.kind, data=data))
        return out

    async def with_progress(title: str, message: str, work):
        """Await the coroutine `work(report)` under a work-done progress token when the client
        supports them (`report(message, percentage)`); the progress' cancel button
        (window/workDoneProgress/cancel) stops it like $/cancelRequest does (-32800)."""
        token = None
        if _client_has(ls.client_capabilities, "window", "work_done_progress"):
            token = str(uuid.uuid4())
            try:
                await ls.work_done_progress.create_async(token)
                ls.work_done_progress.begin(token, lsp.WorkDoneProgressBegin(
                    title=title, message=message, cancellable=True, percentage=0))
            except Exception:  # a client that refuses progress still gets its answer
                token = None

        def report(msg: str, percentage: int | None = None):
            if token is not None:
                ls.work_done_progress.report(token, lsp.WorkDoneProgressReport(message=msg, percentage=percentage))

        task = asyncio.ensure_future(work(report))
        stopped = []
        if token is not None:
            ls._progress_cancel[token] = lambda: (stopped.append(True), task.cancel())
        try:
            return await task
        except asyncio.CancelledError:
            if stopped:  # the progress was cancelled, not this request
                raise JsonRpcException(code=-32800, message=f"{message}: cancelled") from None
            raise
        except CompletionCancelled:
            raise JsonRpcException(code=-32800, message=f"{message}: cancelled") from None
        finally:
            if token is not None:
                ls._progress_cancel.pop(token, None)
                ls.work_done_progress.end(token, lsp.WorkDoneProgressEnd())
                ls.work_done_progress.tokens.pop(token, None)

    @ls.feature(lsp.WINDOW_WORK_DONE_PROGRESS_CANCEL)
    def work_done_progress_cancel(params: lsp.WorkDoneProgressCancelParams):
        stop = ls._progress_cancel.pop(str(params.token), None)
        if stop is not None:
            stop()

    @ls.feature(lsp.CODE_ACTION_RESOLVE)
    @_request_guard
    async def code_action_resolve(action: lsp.CodeAction):
        """Run the repair or the refactor (with `$/progress` when the client supports it;
        `$/cancelRequest` stops it in the core) and return the action with a WorkspaceEdit.
        Nothing is written: the client applies the edit, or not."""
        data = action.data if isinstance(action.data, dict) else {}
        if not isinstance(data.get("uri"), str):
            raise JsonRpcException(code=INVALID_PARAMS, message="codeAction/resolve: not a dllm-ls action")
        if data.get("action") in ("propagate", "repairFile"):
            return await resolve_refactor(action, data)
        doc = ls.docs.get(data["uri"])
        index = doc.index
        text = index.text.replace("\r\n", "\n")
        offset = len(index.text[:index.offset(int(data.get("line", 0)), int(data.get("character", 0)),
                                              ls.docs.encoding)].replace("\r\n", "\n"))
        language = doc.language_id or language_id_for(doc.uri)
        span = fix_find_span(text, offset, language)
        if span is None:
            raise DllmError("the cursor is no longer inside a function; ask for the code actions again")
        edits, res = await with_progress("dllm-ls", data.get("title", "repairing"),
                                         lambda report: fix_repair(ls.core, doc.uri, text, span, language))
        changes = []
        for e in edits:
            a, b = _lf_to_doc(index, text, e.start), _lf_to_doc(index, text, e.end)
            changes.append(lsp.TextEdit(range=lsp.Range(start=lsp.Position(*a), end=lsp.Position(*b)),
                                        new_text=e.new_text.replace("\n", doc.eol) if doc.eol != "\n" else e.new_text))
        action.edit = lsp.WorkspaceEdit(changes={doc.uri: changes})
        conf = min((e.confidence for e in edits), default=1.0)
        action.title = (f"{action.title} (confidence {conf:.2f})" if edits
                        else f"{action.title}: the model finds nothing to fix")
        return action

    async def resolve_refactor(action: lsp.CodeAction, data: dict):
        """"Propagate this edit" / "Repair this file": the core's `refactor` over the whole file,
        answered as one WorkspaceEdit, its edits annotated per function (needsConfirmation)."""
        doc = ls.docs.get(data["uri"])
        index, version = doc.index, doc.version  # this version's text, even if the user types on
        language = doc.language_id or language_id_for(doc.uri)
        if language != "python":
            raise refactor_actions.RefactorInputError(
                f"whole-file refactors need a Python file; {doc.uri} is {language or 'of an unknown language'}")
        text = index.text.replace("\r\n", "\n")
        since = None
        if data["action"] == "propagate":
            edit = doc.history.get(data.get("edit")) if isinstance(data.get("edit"), int) else None
            if edit is None:
                raise refactor_actions.RefactorInputError(
                    "that edit is no longer in the document's recent edits (undone, propagated, or "
                    "merged with a later one); ask for the code actions again")
            since = doc.history.before(edit, index.text).replace("\r\n", "\n")
            where = f"the edit at line {refactor_actions.edit_line(index.text, edit) + 1}"
        else:
            where = "every function"
        refactor_actions.check_input(data["action"], text, since)
        title = data.get("title", "refactoring")

        async def work(report):
            def progress(done, total, label):
                report(f"{label} ({done + 1}/{total})", int(100 * done / max(1, total)))
            return await refactor_actions.refactor(ls.core, doc.uri, text, since, language, progress)

        edits, res = await with_progress("dllm-ls", title, work)
        action.edit = _workspace_edit(doc, index, text, version, edits, f"dllm-ls: {title} ({where})")
        if edits:
            action.title = f"{action.title}: {refactor_actions.summary(edits)}"
            new = res.get("text", "")
            if isinstance(new, str):
                doc.history.expect(new.replace("\n", doc.eol) if doc.eol != "\n" else new)
        else:
            action.title = f"{action.title}: the model finds nothing to change"
        return action

    def _workspace_edit(doc, index, text: str, version: int, edits, description: str) -> lsp.WorkspaceEdit:
        """One TextDocumentEdit (at `version`, so a client refuses it once the document changed),
        its edits annotated with their function, every annotation needsConfirmation: the client
        shows a preview. Clients without documentChanges get `changes`, without annotations."""
        caps = getattr(getattr(ls.client_capabilities, "workspace", None), "workspace_edit", None)
        document_changes = bool(getattr(caps, "document_changes", False))
        annotated = document_changes and getattr(caps, "change_annotation_support", None) is not None
        ids: dict[str, str] = {}
        annotations: dict[str, lsp.ChangeAnnotation] = {}
        out = []
        for e in edits:
            a, b = _lf_to_doc(index, text, e.start), _lf_to_doc(index, text, e.end)
            rng = lsp.Range(start=lsp.Position(*a), end=lsp.Position(*b))
            new_text = e.new_text.replace("\n", doc.eol) if doc.eol != "\n" else e.new_text
            if not annotated:
                out.append(lsp.TextEdit(range=rng, new_text=new_text))
                continue
            if e.label not in ids:
                ids[e.label] = f"dllm.{len(ids) + 1}"
            aid = ids[e.label]
            conf = min(x.confidence for x in edits if x.label == e.label)
            annotations[aid] = lsp.ChangeAnnotation(label=e.label, needs_confirmation=True,
                                                    description=f"{description}; confidence {conf:.2f}")
            out.append(lsp.AnnotatedTextEdit(range=rng, new_text=new_text, annotation_id=aid))
        if not document_changes:
            return lsp.WorkspaceEdit(changes={doc.uri: out})
        return lsp.WorkspaceEdit(
            document_changes=[lsp.TextDocumentEdit(
                text_document=lsp.OptionalVersionedTextDocumentIdentifier(uri=doc.uri, version=version),
                edits=out)],
            change_annotations=annotations or None)

    @ls.command(ACCEPT)
    def accept(*args):
        info = args[0] if args and isinstance(args[0], dict) else {}
        ls.engine.accept(str(info.get("id", "")), info.get("length", 0) if isinstance(info.get("length"), int) else 0)
        return None

    @ls.command(TELEMETRY)
    def telemetry(*args):
        return {"telemetry": ls.engine.telemetry.snapshot(), "core": ls.core.health().to_params(),
                "settings": dataclasses.asdict(ls.settings), "position_encoding": ls.docs.encoding}

    @ls.feature(lsp.SHUTDOWN)
    async def shutdown(*args):
        log.info("telemetry at shutdown: %s", ls.engine.telemetry.snapshot() if ls.engine else {})
        if ls.core is not None:
            await ls.core.close()

    return ls
