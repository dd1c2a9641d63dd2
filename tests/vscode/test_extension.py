"""The VS Code extension's build: strict tsc, lint, its unit tests (node:test, the logic that does
not need VS Code), and the .vsix that @vscode/vsce packs (see conftest.py for the toolchain)."""

from __future__ import annotations

import json
import re
import zipfile

import pytest

from .conftest import EXTENSION

pytestmark = pytest.mark.slow


def test_tsc_compiles_strictly_without_a_diagnostic(compiled):
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    assert "error" not in compiled.stdout.lower()
    options = json.loads((EXTENSION / "tsconfig.json").read_text())["compilerOptions"]
    for flag in ("strict", "noUncheckedIndexedAccess", "exactOptionalPropertyTypes", "noImplicitReturns"):
        assert options[flag] is True, flag
    assert (EXTENSION / "out" / "extension.js").exists()


def test_lint_is_clean(extension_deps):
    r = extension_deps.npm("run", "lint", cwd=EXTENSION, check=False)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "strictTypeChecked" in (EXTENSION / "eslint.config.mjs").read_text()


def test_unit_tests_pass(extension_deps, compiled):
    assert compiled.returncode == 0
    r = extension_deps.npm("test", cwd=EXTENSION, check=False)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out
    passed = int(re.search(r"^ℹ pass (\d+)$", out, re.M).group(1))
    assert passed >= 10 and re.search(r"^ℹ fail 0$", out, re.M), out


def test_engines_and_vscode_types_agree(extension_deps):
    manifest = json.loads((EXTENSION / "package.json").read_text())
    engine = manifest["engines"]["vscode"]
    types = manifest["devDependencies"]["@types/vscode"]
    assert engine == f"^{types}", (engine, types)  # the API typed against is the oldest one required
    installed = json.loads((EXTENSION / "node_modules" / "@types" / "vscode" / "package.json").read_text())
    assert installed["version"] == types
    client = json.loads((EXTENSION / "node_modules" / "vscode-languageclient" / "package.json").read_text())
    assert client["version"].startswith("11.")
    low = tuple(int(x) for x in types.split("."))
    need = tuple(int(x) for x in re.sub(r"[^\d.]", "", client["engines"]["vscode"]).split("."))
    assert low >= need, f"vscode-languageclient {client['version']} needs VS Code {need}"


def test_settings_and_commands_are_contributed_with_descriptions():
    manifest = json.loads((EXTENSION / "package.json").read_text())
    props = manifest["contributes"]["configuration"]["properties"]
    for key in ("dllm.enable", "dllm.debounceMs", "dllm.maxTokens", "dllm.mode", "dllm.modes", "dllm.coreAddress",
                "dllm.trace.server", "dllm.server.path", "dllm.server.pythonPath", "dllm.server.args"):
        assert key in props, key
    for key, prop in props.items():
        assert len(prop.get("description") or prop.get("markdownDescription") or "") > 20, key
    commands = {c["command"] for c in manifest["contributes"]["commands"]}
    assert commands == {"dllm.toggle", "dllm.restartCore", "dllm.showLog"}
    # the server's own commands (dllm.accept, dllm.telemetry) are registered by the client library
    assert not commands & {"dllm.accept", "dllm.telemetry"}
    # every server setting the extension sends is a contributed setting
    sent = re.search(r"SERVER_SETTINGS = \[(.*?)\]", (EXTENSION / "src" / "config.ts").read_text(), re.S).group(1)
    for key in re.findall(r'"(\w+)"', sent):
        assert f"dllm.{key}" in props, key


def test_extension_ts_stays_small():
    lines = (EXTENSION / "src" / "extension.ts").read_text().splitlines()
    assert len(lines) <= 140, len(lines)


def test_vsix_holds_the_compiled_extension_and_its_runtime_dependencies(vsix):
    names = zipfile.ZipFile(vsix).namelist()
    assert "extension/out/extension.js" in names and "extension/package.json" in names
    assert "extension/node_modules/vscode-languageclient/package.json" in names
    assert not [n for n in names if n.startswith(("extension/src/", "extension/out/test/"))]
    assert not [n for n in names if "/node_modules/typescript/" in n or "/node_modules/@vscode/vsce/" in n]
    assert vsix.stat().st_size < 2_000_000
