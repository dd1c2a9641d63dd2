"""A bare JSON-RPC client over a server's stdio, to send what a well-behaved client never would."""

from __future__ import annotations

import json
import queue
import subprocess
import threading


class RawClient:
    def __init__(self, command: list[str], env: dict):
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.inbox: queue.Queue = queue.Queue()
        self.stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True).start()
        self._next = 0

    def _read(self):
        out = self.proc.stdout
        while True:
            length = None
            while True:
                line = out.readline()
                if not line:
                    self.inbox.put(None)
                    return
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":")[1])
                elif line in (b"\r\n", b"\n") and length is not None:
                    break
            self.inbox.put(json.loads(out.read(length)))

    def send_bytes(self, body: bytes):
        self.proc.stdin.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.proc.stdin.flush()

    def send(self, message: dict):
        self.send_bytes(json.dumps(message).encode("utf-8"))

    def notify(self, method: str, params=None):
        self.send({"jsonrpc": "2.0", "method": method, "params": params})

    def request(self, method: str, params=None, timeout: float = 60.0) -> dict:
        """Send a request and return its response (result or error)."""
        self._next += 1
        msg_id = self._next
        self.send({"jsonrpc": "2.0", "id": msg_id, "method": method, "params": params})
        return self.response(msg_id, timeout)

    def response(self, msg_id, timeout: float = 60.0) -> dict:
        while True:
            msg = self.inbox.get(timeout=timeout)
            if msg is None:
                raise EOFError("the server closed its output: " + b"".join(self.stderr).decode(errors="replace")[-2000:])
            if "method" not in msg and msg.get("id") == msg_id:
                return msg

    def notifications(self, method: str) -> list[dict]:
        """The notifications of `method` received so far (others stay queued)."""
        got, keep = [], []
        while True:
            try:
                msg = self.inbox.get_nowait()
            except queue.Empty:
                break
            (got if msg and msg.get("method") == method else keep).append(msg)
        for m in keep:
            self.inbox.put(m)
        return [m["params"] for m in got]

    def close(self):
        try:
            self.request("shutdown", None, timeout=10)
            self.notify("exit")
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()
            self.proc.wait()
