"""`dllm-ls fix` on a tiny random checkpoint: runs, answers JSON, bad lines get one clear error."""

import json

from dllm_ls.cli import main


def test_fix_cli(tiny_checkpoint, tmp_path, capsys):
    f = tmp_path / "a.py"
    f.write_text("import os\n\ndef add(a, b):\n    return a - b\n")
    assert main(["fix", str(f), "--line", "4", "--json", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "edits" in res and res["span"] == [11, len(f.read_text())]
    assert main(["fix", str(f), "--line", "1", "--checkpoint", str(tiny_checkpoint), "--device", "cpu"]) == 2
    assert "not inside a function" in capsys.readouterr().err
    assert f.read_text() == "import os\n\ndef add(a, b):\n    return a - b\n"  # never written
