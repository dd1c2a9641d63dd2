import assert from "node:assert/strict";
import { test } from "node:test";
import { errorNotice, parseStatus, statusView } from "../status";

test("parseStatus accepts the server's shape and nothing else", () => {
  assert.deepEqual(parseStatus({ state: "ready", message: "model m on cpu", fix: "" }),
    { state: "ready", message: "model m on cpu", fix: "" });
  assert.deepEqual(parseStatus({ state: "busy" }), { state: "busy", message: "", fix: "" });
  assert.equal(parseStatus({ state: "sleeping" }), undefined);
  assert.equal(parseStatus(null), undefined);
  assert.equal(parseStatus("ready"), undefined);
  assert.deepEqual(parseStatus({ state: "error", message: 3, fix: "pip install" }), { state: "error", message: "", fix: "pip install" });
});

test("statusView: one icon per state, the message and the click in the tooltip", () => {
  const ready = statusView({ state: "ready", message: "model test on cpu", fix: "" }, "running", true);
  assert.equal(ready.text, "$(sparkle) dllm");
  assert.match(ready.tooltip, /ready: model test on cpu/);
  assert.match(ready.tooltip, /Click to turn inline completions on or off/);
  assert.equal(ready.background, undefined);
  assert.equal(statusView({ state: "loading", message: "", fix: "" }, "running", true).text, "$(loading~spin) dllm");
  assert.equal(statusView({ state: "busy", message: "", fix: "" }, "running", true).text, "$(sync~spin) dllm");
  assert.equal(statusView(undefined, "starting", true).text, "$(loading~spin) dllm");
});

test("statusView: an error shows its fix and a warning colour", () => {
  const v = statusView({ state: "error", message: "no model", fix: "pass --checkpoint DIR" }, "running", true);
  assert.equal(v.text, "$(warning) dllm");
  assert.equal(v.background, "warning");
  assert.match(v.tooltip, /no model\. Fix: pass --checkpoint DIR\./);
  assert.equal(errorNotice({ state: "error", message: "no model", fix: "pass --checkpoint DIR" }),
    "dllm-ls: no model. Fix: pass --checkpoint DIR");
  assert.equal(errorNotice({ state: "error", message: "no model", fix: "" }), "dllm-ls: no model");
});

test("statusView: disabled by the setting or by the server; a stopped client is an error", () => {
  const ready = { state: "ready", message: "", fix: "" } as const;
  assert.equal(statusView(ready, "running", false).text, "$(circle-slash) dllm");
  assert.match(statusView(ready, "running", false).tooltip, /^dllm-ls: inline completions are off\. Click/);
  const confirmed = statusView({ state: "disabled", message: "disabled (dllm.enable = false)", fix: "" }, "running", false);
  assert.equal(confirmed.text, "$(circle-slash) dllm");
  assert.match(confirmed.tooltip, /^dllm-ls: disabled \(dllm\.enable = false\)\. Click/);
  assert.equal(statusView({ ...ready, state: "disabled" }, "running", true).text, "$(circle-slash) dllm");
  const stopped = statusView(ready, "stopped", true);
  assert.equal(stopped.background, "error");
  assert.match(stopped.tooltip, /not running.*Show Log/);
});
