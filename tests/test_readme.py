"""The README's Python snippet runs as written (shorter training, in a temporary folder)."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_readme_snippet_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks, "the README has no Python snippet"
    code = blocks[0]
    assert "max_epochs=60" in code  # the one change made here: train for 2 epochs
    code = code.replace("max_epochs=60", "max_epochs=2")
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    exec(compile(code, "README.md", "exec"), ns)
    assert ns["z"].shape[0] == ns["mdata"].n_obs
    assert (tmp_path / "models").is_dir()
