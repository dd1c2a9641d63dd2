// The status bar item's content from the server's `dllm/status` notification and the client's
// state. No `vscode` import (unit-tested under plain Node).

/** `dllm/status` params: {state: loading | ready | busy | error | disabled, message, fix}. */
export interface ServerStatus {
  state: "loading" | "ready" | "busy" | "error" | "disabled";
  message: string;
  fix: string;
}

const STATES = new Set<string>(["loading", "ready", "busy", "error", "disabled"]);

/** The notification's params, or undefined for a shape the extension does not know. */
export function parseStatus(params: unknown): ServerStatus | undefined {
  if (typeof params !== "object" || params === null) return undefined;
  const p = params as Record<string, unknown>;
  if (typeof p.state !== "string" || !STATES.has(p.state)) return undefined;
  return {
    state: p.state as ServerStatus["state"],
    message: typeof p.message === "string" ? p.message : "",
    fix: typeof p.fix === "string" ? p.fix : "",
  };
}

/** The language client's own state: starting the process, running, or stopped (crashed or
 * not startable). */
export type ClientPhase = "starting" | "running" | "stopped";

export interface StatusView {
  text: string;
  tooltip: string;
  /** "error": statusBarItem.errorBackground; "warning": statusBarItem.warningBackground. */
  background: "error" | "warning" | undefined;
}

const CLICK = "Click to turn inline completions on or off.";

export function statusView(status: ServerStatus | undefined, phase: ClientPhase, enabled: boolean): StatusView {
  if (phase === "stopped") {
    return {
      text: "$(error) dllm",
      tooltip: "dllm-ls: the language server is not running. Run \"dllm-ls: Show Log\" for the reason, " +
        "then \"dllm-ls: Restart Core\".",
      background: "error",
    };
  }
  if (!enabled || status?.state === "disabled") {
    // the server's own words once it has confirmed (they name the setting), else ours
    const why = status?.state === "disabled" && status.message !== "" ? status.message : "inline completions are off";
    return { text: "$(circle-slash) dllm", tooltip: `dllm-ls: ${why}. ${CLICK}`, background: undefined };
  }
  if (phase === "starting" || status === undefined) {
    return { text: "$(loading~spin) dllm", tooltip: `dllm-ls: starting the server. ${CLICK}`, background: undefined };
  }
  const message = status.message === "" ? "" : `: ${status.message}`;
  switch (status.state) {
    case "loading":
      return { text: "$(loading~spin) dllm", tooltip: `dllm-ls: loading${message}. ${CLICK}`, background: undefined };
    case "busy":
      return { text: "$(sync~spin) dllm", tooltip: `dllm-ls: completing${message}. ${CLICK}`, background: undefined };
    case "error":
      return {
        text: "$(warning) dllm",
        tooltip: `dllm-ls error${message}.` + (status.fix === "" ? "" : ` Fix: ${status.fix}.`) + ` ${CLICK}`,
        background: "warning",
      };
    case "ready":
    default:
      return { text: "$(sparkle) dllm", tooltip: `dllm-ls: ready${message}. ${CLICK}`, background: undefined };
  }
}

/** The notification to show once when the server reports an error (the status bar keeps it). */
export function errorNotice(status: ServerStatus): string {
  return `dllm-ls: ${status.message}` + (status.fix === "" ? "" : `. Fix: ${status.fix}`);
}
