// The extension's settings -> how to start the server and what to send it. No `vscode` import:
// the unit tests (src/test/) run these functions under plain Node.
import * as fs from "node:fs";

/** What `vscode.WorkspaceConfiguration` offers for reading (a plain object in the tests). */
export interface ConfigReader {
  get(key: string): unknown;
}

/** The `dllm.*` settings that the server reads (lsp_server/settings.py, camelCase keys). The
 * others (`dllm.server.*`, `dllm.trace.server`) belong to the extension and are never sent. */
export const SERVER_SETTINGS = [
  "enable",
  "debounceMs",
  "maxTokens",
  "blockSize",
  "threshold",
  "mode",
  "modes",
  "suggestionCache",
  "invokedItems",
  "disabledLanguages",
  "coreAddress",
  "checkpoint",
  "device",
] as const;

/** The settings object sent in `initializationOptions`, `workspace/didChangeConfiguration` and as
 * the answer to `workspace/configuration` (section "dllm"). */
export function serverSettings(cfg: ConfigReader): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const key of SERVER_SETTINGS) {
    const value = cfg.get(key);
    if (value !== undefined) out[key] = value;
  }
  return out;
}

/** The settings that change the server process itself: a change restarts the client. */
export const RESTART_SECTIONS = ["dllm.server"] as const;

export interface ServerCommand {
  command: string;
  args: string[];
}

/** `~` and `${workspaceFolder}` / `${userHome}` in a path setting, expanded. */
export function expandPath(value: string, home: string, workspaceFolder?: string): string {
  let out = value.trim();
  if (out === "~" || out.startsWith("~/")) out = home + out.slice(1);
  out = out.replaceAll("${userHome}", home);
  if (workspaceFolder !== undefined) out = out.replaceAll("${workspaceFolder}", workspaceFolder);
  return out;
}

function str(value: unknown): string {
  return typeof value === "string" ? value : "";
}

/** `dllm-ls serve ARGS`, or `PYTHON -m dllm_ls.cli serve ARGS` when `dllm.server.pythonPath` is
 * set (a virtual environment that is not on PATH). */
export function serverCommand(cfg: ConfigReader, home: string, workspaceFolder?: string): ServerCommand {
  const args = cfg.get("server.args");
  const extra = Array.isArray(args) ? args.filter((a): a is string => typeof a === "string") : [];
  const python = expandPath(str(cfg.get("server.pythonPath")), home, workspaceFolder);
  if (python !== "") {
    return { command: python, args: ["-m", "dllm_ls.cli", "serve", ...extra] };
  }
  const path = expandPath(str(cfg.get("server.path")), home, workspaceFolder);
  return { command: path === "" ? "dllm-ls" : path, args: ["serve", ...extra] };
}

/** The executable `command` runs (searched on PATH when it has no slash, relative to `cwd` when it
 * has one), or undefined when there is none: the server is then not started, and the user gets
 * one message with the fix instead of the client library's spawn error. */
export function findExecutable(command: string, pathEnv: string, cwd: string,
  isExecutable: (file: string) => boolean): string | undefined {
  if (command.includes("/")) {
    const file = command.startsWith("/") ? command : `${cwd}/${command}`;
    return isExecutable(file) ? file : undefined;
  }
  for (const dir of pathEnv.split(":")) {
    if (dir !== "" && isExecutable(`${dir}/${command}`)) return `${dir}/${command}`;
  }
  return undefined;
}

export function isExecutable(file: string): boolean {
  try {
    fs.accessSync(file, fs.constants.X_OK);
    return fs.statSync(file).isFile();
  } catch {
    return false;
  }
}

/** The one-line message, and its fix, for a server that did not start. */
export function startErrorMessage(cmd: ServerCommand, error: unknown): string {
  const line = [cmd.command, ...cmd.args].join(" ");
  const text = error instanceof Error ? error.message : String(error);
  const code = typeof error === "object" && error !== null && "code" in error ? String(error.code) : "";
  if (code === "ENOENT" || /\bENOENT\b/.test(text)) {
    return `dllm-ls: cannot start the server: \`${cmd.command}\` was not found. ` +
      "Install it (`pip install dllm-ls`), or set dllm.server.path to the dllm-ls executable " +
      "or dllm.server.pythonPath to a Python that has it.";
  }
  if (code === "EACCES" || /\bEACCES\b/.test(text)) {
    return `dllm-ls: cannot start the server: \`${cmd.command}\` is not executable. ` +
      "Check dllm.server.path / dllm.server.pythonPath.";
  }
  return `dllm-ls: the server (\`${line}\`) did not start: ${text.split("\n")[0] ?? ""}. ` +
    "See the dllm-ls output channel (command: dllm-ls: Show Log).";
}

/** Which settings scope `dllm.enable` is toggled in: where it is set now, the most specific first
 * (so a workspace that turned it off is turned back on there), else the user settings. */
export type Scope = "workspaceFolder" | "workspace" | "global";

export interface EnableInspection {
  workspaceFolderValue?: boolean | undefined;
  workspaceValue?: boolean | undefined;
  globalValue?: boolean | undefined;
}

export function toggleScope(inspection: EnableInspection | undefined): Scope {
  if (inspection?.workspaceFolderValue !== undefined) return "workspaceFolder";
  if (inspection?.workspaceValue !== undefined) return "workspace";
  return "global";
}
