// dllm-ls for VS Code: a thin client around vscode-languageclient. The server (`dllm-ls serve`)
// does the work; inline completions, code actions (resolved lazily) and refactor previews (edits
// the server marks needsConfirmation) are the client library's standard LSP features. This file
// adds the status bar item (`dllm/status`), settings sync, and three commands.
import * as os from "node:os";
import * as vscode from "vscode";
import { DidChangeConfigurationNotification, LanguageClient, State } from "vscode-languageclient/node";
import type { LanguageClientOptions } from "vscode-languageclient/node";
import { findExecutable, isExecutable, RESTART_SECTIONS, serverCommand, serverSettings, startErrorMessage, toggleScope } from "./config";
import type { ServerCommand } from "./config";
import { errorNotice, parseStatus, statusView } from "./status";
import type { ClientPhase, ServerStatus } from "./status";

let client: LanguageClient | undefined;

const TARGETS = {
  workspaceFolder: vscode.ConfigurationTarget.WorkspaceFolder,
  workspace: vscode.ConfigurationTarget.Workspace,
  global: vscode.ConfigurationTarget.Global,
} as const;

export async function activate(context: vscode.ExtensionContext): Promise<void> {
  const output = vscode.window.createOutputChannel("dllm-ls", { log: true });
  const item = vscode.window.createStatusBarItem("dllm.status", vscode.StatusBarAlignment.Right, 100);
  item.name = "dllm-ls";
  item.command = "dllm.toggle";
  context.subscriptions.push(output, item);
  const config = () => vscode.workspace.getConfiguration("dllm");
  let status: ServerStatus | undefined;
  let phase: ClientPhase = "starting";

  const render = () => {
    const view = statusView(status, phase, config().get<boolean>("enable", true));
    item.text = view.text;
    item.tooltip = view.tooltip;
    item.backgroundColor = view.background && new vscode.ThemeColor(`statusBarItem.${view.background}Background`);
    item.show();
  };

  const start = async () => {
    const folder = vscode.workspace.workspaceFolders?.[0]?.uri.fsPath;
    const cmd = serverCommand(config(), os.homedir(), folder);
    output.info(`starting: ${[cmd.command, ...cmd.args].join(" ")}`);
    if (process.platform !== "win32" && !findExecutable(cmd.command, process.env.PATH ?? "", folder ?? os.homedir(), isExecutable)) {
      failed(cmd, Object.assign(new Error(`spawn ${cmd.command} ENOENT`), { code: "ENOENT" }));
      return;
    }
    const options: LanguageClientOptions = {
      documentSelector: [{ scheme: "file" }, { scheme: "untitled" }],
      initializationOptions: { dllm: serverSettings(config()) },
      outputChannel: output,
      traceOutputChannel: output,
      middleware: {
        workspace: {
          // the server pulls section "dllm": answer with the server's settings only
          configuration: async (params, token, next) => {
            const answers = (await next(params, token)) as unknown;
            return params.items.map((it, i): unknown => it.section === "dllm"
              ? serverSettings(vscode.workspace.getConfiguration("dllm", it.scopeUri ? vscode.Uri.parse(it.scopeUri) : undefined))
              : Array.isArray(answers) ? answers[i] : null);
          },
        },
      },
    };
    const c = new LanguageClient("dllm", "dllm-ls", { command: cmd.command, args: cmd.args, options: { cwd: folder ?? os.homedir() } }, options);
    client = c;
    status = undefined;
    c.onDidChangeState((e) => {
      if (client !== c) return; // a client being replaced
      phase = e.newState === State.Running ? "running" : e.newState === State.Starting ? "starting" : "stopped";
      render();
    });
    c.onNotification("dllm/status", (params: unknown) => {
      const next = parseStatus(params);
      if (next === undefined || client !== c) return;
      if (next.state === "error" && (status?.state !== "error" || status.message !== next.message)) {
        void vscode.window.showErrorMessage(errorNotice(next), "Show Log").then((a) => { if (a) output.show(true); });
      }
      status = next;
      render();
    });
    await c.start().catch((e: unknown) => { failed(cmd, e); });
  };

  const failed = (cmd: ServerCommand, e: unknown) => {
    phase = "stopped";
    render();
    output.error(startErrorMessage(cmd, e));
    void vscode.window.showErrorMessage(startErrorMessage(cmd, e), "Open Settings", "Show Log").then((choice) => {
      if (choice === "Open Settings") void vscode.commands.executeCommand("workbench.action.openSettings", "dllm.server");
      if (choice === "Show Log") output.show(true);
    });
  };

  let restarting = Promise.resolve();
  const restart = () => (restarting = restarting.then(async () => {  // one at a time, in order
    const old = client;
    client = undefined;
    phase = "starting";
    render();
    await old?.stop().catch(() => undefined);
    await start();
  }).catch((e: unknown) => { output.error(`restart failed: ${String(e)}`); }));

  context.subscriptions.push(
    vscode.commands.registerCommand("dllm.toggle", async () => {
      const cfg = config();
      const on = !cfg.get<boolean>("enable", true);
      await cfg.update("enable", on, TARGETS[toggleScope(cfg.inspect<boolean>("enable"))]);
      vscode.window.setStatusBarMessage(`dllm-ls: inline completions ${on ? "on" : "off"}`, 3000);
    }),
    vscode.commands.registerCommand("dllm.restartCore", restart),
    vscode.commands.registerCommand("dllm.showLog", () => { output.show(true); }),
    vscode.workspace.onDidChangeConfiguration((e) => {
      if (!e.affectsConfiguration("dllm")) return;
      render();
      if (RESTART_SECTIONS.some((s) => e.affectsConfiguration(s))) {
        void restart();
      } else if (client?.isRunning()) {
        void client.sendNotification(DidChangeConfigurationNotification.type, { settings: { dllm: serverSettings(config()) } });
      }
    }),
  );
  render();
  await start();
}

export async function deactivate(): Promise<void> {
  await client?.stop();
}
