// The browser half of tests/vscode/test_vscode_e2e.py: Debian's Chromium, driven by playwright-core,
// uses VS Code (code-server, the dllm-ls extension installed from its .vsix) like a person would.
//
//     node drive.mjs PLAN.json
//
// PLAN: {url, chromium, workspace, machineSettings, judgeFile, startsLog, missingServer, screenshot,
// failShot, out}.
// The server behind the extension is the real `dllm-ls serve` with a scripted model (the test's
// wrapper script): first one that continues a known document (predictable ghost text), then, after
// the test switches `dllm.server.args`, a judge that knows the right file (predictable fixes).
// Every observation goes to PLAN.out as JSON; the Python test makes the assertions. Exit status 0
// when all steps ran, 1 (with `error` in the JSON and a screenshot at PLAN.failShot) otherwise.
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const plan = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const result = { steps: [] };
const t0 = Date.now();
const step = (name, extra = {}) => {
  result.steps.push({ name, s: (Date.now() - t0) / 1000, ...extra });
  console.log(`${((Date.now() - t0) / 1000).toFixed(1)} s  ${name}`);
};
const save = () => fs.writeFileSync(plan.out, JSON.stringify(result, null, 2));
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const file = (name) => fs.readFileSync(path.join(plan.workspace, name), "utf8");

async function until(what, fn, timeout = 20000, every = 100) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    last = await fn();
    if (last) return last;
    await sleep(every);
  }
  throw new Error(`timed out after ${timeout / 1000} s waiting for ${what} (last: ${JSON.stringify(last)})`);
}

const browser = await chromium.launch({ executablePath: plan.chromium, args: ["--no-sandbox"] });
const page = await browser.newPage({ viewport: { width: 1280, height: 720 } });
const status = page.locator('[id="dllm-ls.dllm-ls.dllm.status"]');
const statusLabel = async () => (await status.count()) ? (await status.getAttribute("aria-label")) ?? "" : "";

async function open(name) {
  await page.keyboard.press("Control+P");
  await page.locator(".quick-input-widget input").waitFor();
  await page.keyboard.type(name);
  await page.locator(".quick-input-widget .monaco-list-row", { hasText: name }).first().waitFor();
  await page.keyboard.press("Enter");
  await page.locator(`.tab.active[aria-label*="${name}"]`).waitFor();
  await page.locator(".monaco-editor.focused").waitFor();
}

async function ghostText() {
  return page.evaluate(() => {
    const inline = [...document.querySelectorAll(".ghost-text-decoration")].map((e) => e.textContent).join("");
    const lines = [...document.querySelectorAll(".view-line")].filter((l) => l.querySelector(".ghost-text"))
      .map((l) => l.textContent);
    return inline === "" && lines.length === 0 ? "" : [inline, ...lines].join("\n").replaceAll("\u00a0", " ");
  });
}

async function gotoLine(line, column) {
  await page.keyboard.press("Control+G");
  await page.locator(".quick-input-widget input").waitFor();
  await page.keyboard.type(`${line}:${column}`);
  await page.keyboard.press("Enter");
  await until(`the cursor at ${line}:${column}`, async () =>
    (await page.locator(".statusbar-item", { hasText: `Ln ${line}, Col ${column}` }).count()) > 0);
}

async function command(title) {
  await page.keyboard.press("Control+Shift+P");
  await page.locator(".quick-input-widget input").waitFor();
  await page.keyboard.type(title);
  await page.locator(".quick-input-widget .monaco-list-row", { hasText: title }).first().waitFor();
  await page.keyboard.press("Enter");
}

async function saveAndRead(name, before) {
  await page.keyboard.press("Control+S");
  return until(`${name} saved`, () => { const t = file(name); return t !== before ? t : ""; }, 10000);
}

async function pickAction(title) {
  const row = page.locator(".action-widget .monaco-list-row", { hasText: title });
  await row.waitFor({ timeout: 20000 });
  result.actionMenus = [...(result.actionMenus ?? []),
    await page.locator(".action-widget .monaco-list-row").allTextContents()];
  await row.click();
}

try {
  // 1. VS Code in the browser, the extension activated, the server's model loaded
  await page.goto(plan.url);
  await page.locator(".monaco-workbench").waitFor({ timeout: 60000 });
  step("workbench");
  result.readyLabel = await until("dllm/status ready", async () => {
    const l = await statusLabel();
    return l.includes("ready") ? l : "";
  }, 60000, 200);
  step("server ready", { label: result.readyLabel });

  // 2. type in a Python file: the ghost text appears, Tab accepts it, the document holds it
  await open("add.py");
  // 50 ms a key, a fast typist (keys sent with no delay at all made VS Code skip its inline
  // completion request now and then: 2 runs of 7, no request reached the server)
  await page.keyboard.type("def add(a, b):", { delay: 50 });
  await page.keyboard.press("Enter");
  step("typed");
  await page.locator(".ghost-text-decoration").first().waitFor({ timeout: 20000 });
  result.ghost = await until("the whole ghost text", async () => {
    const g = await ghostText();
    return g.includes("\n") ? g : "";
  }, 5000).catch(() => ghostText());
  step("ghost text shown", { ghost: result.ghost });
  result.fileBeforeAccept = file("add.py");
  await page.screenshot({ path: plan.screenshot });
  await page.keyboard.press("Tab");
  await until("the ghost text gone", async () => (await ghostText()) === "", 5000);
  result.accepted = await saveAndRead("add.py", result.fileBeforeAccept);
  step("accepted and saved");

  // 3. the status bar item toggles dllm.enable; the server confirms through dllm/status
  await status.click();
  result.offLabel = await until("the server's disabled status", async () => {
    const l = await statusLabel();
    return l.includes("dllm.enable = false") ? l : "";
  }, 10000);
  await status.click();
  result.onLabel = await until("ready again", async () => {
    const l = await statusLabel();
    return l.includes("ready") ? l : "";
  }, 10000);
  step("toggled off and on");

  // 4. the server's arguments change: the extension restarts it (now with the judge model)
  fs.writeFileSync(plan.machineSettings, JSON.stringify({
    ...JSON.parse(fs.readFileSync(plan.machineSettings, "utf8")),
    "dllm.server.args": ["--judge-file", plan.judgeFile],
  }, null, 2));
  await until("the server restarted", () => fs.readFileSync(plan.startsLog, "utf8").trim().split("\n").length >= 2);
  // the starts log is written as the process spawns, before the browser may have shown the restart:
  // the old server's "ready" can still be on screen, so first see it go (Python takes seconds to
  // start, the label polls every 100 ms), then the new server's "ready"
  await until("the restart on the status bar", async () => !(await statusLabel()).includes("ready"), 10000, 50);
  await until("the new server ready", async () => (await statusLabel()).includes("ready"), 30000);
  result.starts = fs.readFileSync(plan.startsLog, "utf8").trim().split("\n");
  step("restarted");

  // 5. the code action "Fix this function" (resolved by codeAction/resolve) applies its fix
  await open("two.py");
  result.twoBefore = file("two.py");
  await gotoLine(2, 10);
  await page.keyboard.press("Control+.");
  await pickAction("dllm-ls: Fix this function");
  await until("the fix in the editor", async () =>
    (await page.locator(".view-line", { hasText: "total = a + b" }).count()) > 0);
  result.fixed = await saveAndRead("two.py", result.twoBefore);
  step("fixed the function");

  // 6. "Repair this file" (a source action): the edits need confirmation -> VS Code's Refactor Preview
  await command("Source Action...");
  await pickAction("dllm-ls: Repair this file");
  const preview = page.locator(".bulk-edit-panel");
  const apply = page.locator(".monaco-button", { hasText: "Apply" }).first();
  await preview.locator(".monaco-list-row").first().waitFor({ timeout: 30000 });
  await apply.waitFor();
  result.previewRows = await until("the preview's rows", async () => {
    const rows = await preview.locator(".monaco-list-row").evaluateAll((els) => els.map((e) => e.getAttribute("aria-label")));
    return rows.length >= 2 ? rows : null;
  }, 5000);
  result.fileDuringPreview = file("two.py");
  result.dirtyDuringPreview = await page.locator(".tab.active.dirty").count();
  await page.screenshot({ path: plan.screenshot.replace(/\.png$/, "-preview.png") });
  step("refactor preview shown", { rows: result.previewRows });
  // edits that need confirmation start unchecked: the user ticks the file (all its edits), then Apply
  const fileBox = preview.locator('.monaco-list-row[aria-level="1"] .edit-checkbox').first();
  await fileBox.click();
  await until("the file's edits checked", async () => (await fileBox.getAttribute("aria-checked")) === "true", 5000);
  await apply.click();
  await until("the preview closed", async () => (await preview.locator(".monaco-list-row").count()) === 0, 10000)
    .catch(() => undefined);
  result.repaired = await saveAndRead("two.py", result.fileDuringPreview);
  step("applied and saved");

  // 7. the commands: Restart Core starts a new server; Show Log opens the output channel
  await command("dllm-ls: Restart Core");
  await until("a third server", () => fs.readFileSync(plan.startsLog, "utf8").trim().split("\n").length >= 3);
  await until("ready after the restart", async () => (await statusLabel()).includes("ready"), 30000);
  await command("dllm-ls: Show Log");
  result.log = await until("the log in the Output view", async () => {
    const text = (await page.locator(".output-view .view-lines").allTextContents()).join("\n").replaceAll("\u00a0", " ");
    return text.includes("starting:") ? text : "";
  }, 10000);
  step("restart and log commands");

  // 8. a server that cannot start: the item turns red and a notification names the fix
  fs.writeFileSync(plan.machineSettings, JSON.stringify({ "dllm.server.path": plan.missingServer }, null, 2));
  result.stoppedLabel = await until("the error state", async () => {
    const l = await statusLabel();
    return l.includes("not running") ? l : "";
  }, 20000);
  result.notices = await until("the notification", async () => {
    const all = await page.locator(".notifications-toasts .notification-list-item-message").allTextContents();
    return all.some((t) => t.includes(plan.missingServer)) ? all : null;
  }, 10000);
  step("missing server reported");
} catch (e) {
  result.error = String(e?.stack ?? e);
  console.error(result.error);
  await page.screenshot({ path: plan.failShot }).catch(() => undefined);
} finally {
  result.seconds = (Date.now() - t0) / 1000;
  save();
  await browser.close();
}
process.exit(result.error ? 1 : 0);
