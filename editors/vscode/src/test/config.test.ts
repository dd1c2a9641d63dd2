import assert from "node:assert/strict";
import { test } from "node:test";
import { expandPath, findExecutable, serverCommand, serverSettings, SERVER_SETTINGS, startErrorMessage, toggleScope } from "../config";

const reader = (values: Record<string, unknown>) => ({ get: (key: string): unknown => values[key] });

test("serverSettings sends the server's keys only, as set", () => {
  const cfg = reader({
    enable: false, debounceMs: null, maxTokens: 32, mode: "line", coreAddress: "auto",
    "server.path": "/opt/dllm-ls", "server.args": ["--log-file", "x"], "trace.server": "verbose",
  });
  assert.deepEqual(serverSettings(cfg), { enable: false, debounceMs: null, maxTokens: 32, mode: "line", coreAddress: "auto" });
});

test("every server setting is one the server knows (lsp_server/settings.py, camelCase)", () => {
  assert.deepEqual([...SERVER_SETTINGS].sort(), [
    "blockSize", "checkpoint", "coreAddress", "debounceMs", "device", "disabledLanguages", "enable",
    "invokedItems", "maxTokens", "mode", "modes", "suggestionCache", "threshold",
  ]);
});

test("serverCommand: dllm-ls serve by default, with extra arguments", () => {
  assert.deepEqual(serverCommand(reader({}), "/home/u"), { command: "dllm-ls", args: ["serve"] });
  assert.deepEqual(serverCommand(reader({ "server.path": "", "server.args": ["--log-file", "/tmp/l"] }), "/home/u"),
    { command: "dllm-ls", args: ["serve", "--log-file", "/tmp/l"] });
  assert.deepEqual(serverCommand(reader({ "server.path": "~/venv/bin/dllm-ls" }), "/home/u"),
    { command: "/home/u/venv/bin/dllm-ls", args: ["serve"] });
});

test("serverCommand: a Python path runs the module, and wins over server.path", () => {
  const cfg = reader({ "server.path": "/x/dllm-ls", "server.pythonPath": "${workspaceFolder}/.venv/bin/python",
    "server.args": ["--device", "cpu", 3] });
  assert.deepEqual(serverCommand(cfg, "/home/u", "/w"),
    { command: "/w/.venv/bin/python", args: ["-m", "dllm_ls.cli", "serve", "--device", "cpu"] });
});

test("expandPath", () => {
  assert.equal(expandPath(" ~ ", "/h"), "/h");
  assert.equal(expandPath("~user/x", "/h"), "~user/x");
  assert.equal(expandPath("${userHome}/a/${workspaceFolder}", "/h"), "/h/a/${workspaceFolder}");
  assert.equal(expandPath("${workspaceFolder}/py", "/h", "/w"), "/w/py");
});

test("startErrorMessage names the command and the fix", () => {
  const cmd = { command: "dllm-ls", args: ["serve"] };
  const enoent = Object.assign(new Error("spawn dllm-ls ENOENT"), { code: "ENOENT" });
  const m = startErrorMessage(cmd, enoent);
  assert.match(m, /`dllm-ls` was not found/);
  assert.match(m, /pip install dllm-ls/);
  assert.match(m, /dllm\.server\.path/);
  assert.match(startErrorMessage(cmd, new Error("Launching server failed: spawn x EACCES")), /not executable/);
  const other = startErrorMessage(cmd, new Error("Connection closed\nstack"));
  assert.equal(other, "dllm-ls: the server (`dllm-ls serve`) did not start: Connection closed. "
    + "See the dllm-ls output channel (command: dllm-ls: Show Log).");
});

test("toggleScope toggles where the setting is, most specific first", () => {
  assert.equal(toggleScope(undefined), "global");
  assert.equal(toggleScope({ globalValue: false }), "global");
  assert.equal(toggleScope({ globalValue: true, workspaceValue: false }), "workspace");
  assert.equal(toggleScope({ workspaceValue: true, workspaceFolderValue: false }), "workspaceFolder");
});

test("findExecutable searches PATH for a bare name, and takes a path as it is", () => {
  const files = new Set(["/usr/bin/dllm-ls", "/w/venv/bin/python"]);
  const isExec = (f: string) => files.has(f);
  assert.equal(findExecutable("dllm-ls", "/bin::/usr/bin", "/w", isExec), "/usr/bin/dllm-ls");
  assert.equal(findExecutable("dllm-ls", "/bin", "/w", isExec), undefined);
  assert.equal(findExecutable("/w/venv/bin/python", "", "/", isExec), "/w/venv/bin/python");
  assert.equal(findExecutable("venv/bin/python", "/usr/bin", "/w", isExec), "/w/venv/bin/python");
  assert.equal(findExecutable("/usr/bin/nope", "/usr/bin", "/w", isExec), undefined);
});
