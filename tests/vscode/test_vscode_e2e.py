"""End to end: the .vsix installed in real VS Code (code-server 4.139.1 on Node 24), used in a real
browser (Debian's headless Chromium driven by playwright-core, tests/vscode/drive.mjs), against the
real `dllm-ls serve`. The server's model is scripted (tests/editors/scripted_serve.py): first it
continues DOCUMENT, so the ghost text is known; after the test changes `dllm.server.args` the
extension restarts it with a judge that takes RIGHT for the right file, so the fixes are known.

Set DLLM_VSCODE_SCREENSHOT=PATH to keep the screenshot of the ghost text (docs/vscode-ghost-text.png).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import HERE, ROOT

pytestmark = pytest.mark.slow

DOCUMENT = "def add(a, b):\n    total = a + b\n    return total\n"
RIGHT = DOCUMENT + "\n\ndef double(x):\n    return 2 * x\n"
BUGGY = RIGHT.replace("a + b", "a - b").replace("2 * x", "3 * x")
SUGGESTION = "total = a + b\n    return total"

USER_SETTINGS = {
    "dllm.debounceMs": 10,
    # nothing else completes: VS Code's own word suggestions would take the Enter key
    "editor.quickSuggestions": {"other": False, "comments": False, "strings": False},
    "editor.suggestOnTriggerCharacters": False,
    "editor.wordBasedSuggestions": "off",
    "editor.minimap.enabled": False,
    "workbench.startupEditor": "none",
    "workbench.tips.enabled": False,
    "security.workspace.trust.enabled": False,
    "telemetry.telemetryLevel": "off",
    "extensions.autoCheckUpdates": False,
    "extensions.autoUpdate": False,
    "update.mode": "none",
    "chat.disableAIFeatures": True,
    "workbench.secondarySideBar.defaultVisibility": "hidden",
}


@pytest.fixture(scope="module")
def checkpoint(session_checkpoint) -> Path:
    return session_checkpoint


def stand_in(d: Path, checkpoint: Path) -> tuple[Path, Path]:
    """A `dllm-ls` executable for `dllm.server.path`: it logs its arguments, checks that the
    extension runs `dllm-ls serve ...`, and runs the real server with the scripted model
    (`--judge-file FILE` first in `dllm.server.args` selects the judge)."""
    (d / "document.py").write_text(DOCUMENT)
    (d / "right.py").write_text(RIGHT)
    starts = d / "starts.log"
    script = d / "dllm-ls"
    q = shlex.quote
    script.write_text(f"""#!/bin/sh
echo "$*" >> {q(str(starts))}
[ "$1" = serve ] || {{ echo "dllm-ls stand-in: expected 'serve' first, got: $*" >&2; exit 2; }}
shift
judge=""
if [ "${{1:-}}" = --judge-file ]; then judge="--judge-file $2"; shift 2; fi
PYTHONPATH={q(str(ROOT))} OMP_NUM_THREADS=1 exec {q(sys.executable)} -m tests.editors.scripted_serve \\
    --document {q(str(d / "document.py"))} $judge -- --checkpoint {q(str(checkpoint))} --threads 1 "$@"
""")
    script.chmod(0o755)
    starts.write_text("")
    return script, starts


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vscode(tmp_path_factory, node24, code_server, vsix, checkpoint):
    """code-server serving a workspace, the extension installed from the .vsix, user and machine
    settings written; yields the paths and the URL; stops it (and the servers it started)."""
    d = tmp_path_factory.mktemp("code-server")
    ws, data, ext = d / "workspace", d / "user-data", d / "extensions"
    for p in (ws, data / "User", data / "Machine", ext, d / "xdg"):
        p.mkdir(parents=True)
    (ws / "add.py").write_text("")
    (ws / "two.py").write_text(BUGGY)
    script, starts = stand_in(d, checkpoint)
    (data / "User" / "settings.json").write_text(json.dumps(USER_SETTINGS, indent=2))
    # a path to an executable is a machine setting (scope machine-overridable): Remote settings
    machine = data / "Machine" / "settings.json"
    machine.write_text(json.dumps({"dllm.server.path": str(script)}, indent=2))
    port = free_port()
    (d / "config.yaml").write_text(f"bind-addr: 127.0.0.1:{port}\nauth: none\ncert: false\n")
    env = {**node24.env, "XDG_DATA_HOME": str(d / "xdg"), "XDG_CONFIG_HOME": str(d / "xdg"), "XDG_CACHE_HOME": str(d / "xdg")}
    base = [str(node24.node), str(code_server), "--config", str(d / "config.yaml"),
            "--user-data-dir", str(data), "--extensions-dir", str(ext)]
    r = subprocess.run([*base, "--install-extension", str(vsix)], env=env, capture_output=True, text=True,
                       timeout=120)
    assert "successfully installed" in r.stdout, r.stdout + r.stderr
    log = open(d / "code-server.log", "w")
    proc = subprocess.Popen([*base, "--disable-telemetry", "--disable-update-check", "--disable-workspace-trust",
                             str(ws)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError("code-server did not start:\n" + (d / "code-server.log").read_text()[-3000:])
            time.sleep(0.3)
    yield {"url": f"{url}?folder={ws}", "workspace": ws, "machine": machine, "starts": starts, "dir": d,
           "data": data}
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(10)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


def extension_log(data: Path) -> str:
    logs = sorted(data.glob("logs/*/exthost*/dllm-ls.dllm-ls/dllm-ls.log"))
    return "\n".join(p.read_text(errors="replace")[-3000:] for p in logs)


@pytest.fixture(scope="module")
def session(vscode, playwright, chromium):
    """One run of drive.mjs: its observations (see drive.mjs), also when a step failed."""
    d = vscode["dir"]
    plan = {"url": vscode["url"], "chromium": str(chromium), "workspace": str(vscode["workspace"]),
            "machineSettings": str(vscode["machine"]), "judgeFile": str(d / "right.py"),
            "startsLog": str(vscode["starts"]), "screenshot": str(d / "ghost-text.png"),
            "failShot": str(d / "failure.png"), "out": str(d / "result.json"),
            "missingServer": str(d / "no-such-dir" / "dllm-ls")}
    (d / "plan.json").write_text(json.dumps(plan))
    t0 = time.monotonic()
    env = {**playwright.env, "XDG_CONFIG_HOME": str(d / "xdg"), "XDG_CACHE_HOME": str(d / "xdg")}
    r = subprocess.run([str(playwright.node), str(HERE / "drive.mjs"), str(d / "plan.json")], cwd=HERE, env=env,
                       capture_output=True, text=True, timeout=400)
    result = json.loads((d / "result.json").read_text()) if (d / "result.json").exists() else {}
    result.update(returncode=r.returncode, output=r.stdout + r.stderr, wall=time.monotonic() - t0, dir=d,
                  extension_log=extension_log(vscode["data"]))
    shot = os.environ.get("DLLM_VSCODE_SCREENSHOT")
    if shot and (d / "ghost-text.png").exists():
        shutil.copyfile(d / "ghost-text.png", shot)
    return result


def _check(session, *keys):
    missing = [k for k in keys if k not in session]
    assert not missing, (f"drive.mjs stopped before {missing}: {session.get('error')}\n{session['output'][-3000:]}\n"
                         f"extension log:\n{session['extension_log']}\nscreenshot: {session['dir']}/failure.png")


def test_the_extension_starts_the_server_and_shows_its_status(session):
    _check(session, "readyLabel")
    assert "ready: model " in session["readyLabel"] and "on cpu" in session["readyLabel"]
    assert session["readyLabel"].startswith("sparkle")  # the $(sparkle) icon of the ready state


def test_typing_shows_the_ghost_text_and_tab_accepts_it(session):
    _check(session, "ghost", "accepted")
    assert session["ghost"] == SUGGESTION
    assert session["fileBeforeAccept"] == ""  # nothing was written before the user saved
    assert session["accepted"] == DOCUMENT.rstrip("\n")
    shot = session["dir"] / "ghost-text.png"
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < shot.stat().st_size < 300_000


def test_the_status_item_toggles_completions_through_the_server(session):
    _check(session, "offLabel", "onLabel")
    assert session["offLabel"].startswith("circle-slash")
    assert "ready" in session["onLabel"]


def test_changing_the_server_arguments_restarts_it(session):
    _check(session, "starts")
    assert session["starts"][0] == "serve"
    assert session["starts"][1].startswith("serve --judge-file ") and len(session["starts"]) == 2


def test_the_restart_and_log_commands(session):
    _check(session, "log")
    assert len(session["starts"]) == 2 and session["starts"][1].startswith("serve --judge-file")
    assert (session["dir"] / "starts.log").read_text().splitlines()[2].startswith("serve --judge-file")
    assert "starting: " in session["log"] and "dllm-ls serve --judge-file" in session["log"]


def test_fix_this_function_applies_its_fix(session):
    _check(session, "fixed")
    assert ["Quick Fix", "dllm-ls: Fix this function"] in session["actionMenus"]
    assert session["twoBefore"] == BUGGY
    assert session["fixed"] == BUGGY.replace("a - b", "a + b")  # that function only


def test_repair_this_file_previews_its_edits_and_applies_them_when_confirmed(session):
    _check(session, "previewRows", "repaired")
    assert ["Source Action", "dllm-ls: Repair this file"] in session["actionMenus"]
    # VS Code's Refactor Preview: the file, then its one edit (the other function is right now)
    assert session["previewRows"] == ["two.py, making text edits", "line 7, replacing 3 with 2"]
    # the preview writes nothing: the file on disk and the editor are as they were
    assert session["fileDuringPreview"] == BUGGY.replace("a - b", "a + b")
    assert session["dirtyDuringPreview"] == 0
    assert session["repaired"] == RIGHT
    assert "error" not in session, session["error"]


def test_a_server_that_cannot_start_is_reported_with_its_fix(session):
    _check(session, "stoppedLabel", "notices")
    assert session["stoppedLabel"].startswith("error")  # $(error) icon, errorBackground
    # one message, the extension's (the server is not spawned, so no spawn error from the library)
    [notice] = [n for n in session["notices"] if "no-such-dir" in n]
    assert "was not found" in notice and "pip install dllm-ls" in notice and "dllm.server.path" in notice
