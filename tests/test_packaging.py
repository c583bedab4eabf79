"""environment.yml and pyproject.toml must name the same packages."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
ALIASES = {"python-igraph": "igraph"}


def _name(spec: str) -> str:
    n = re.split(r"[<>=!~ \[]", spec.strip(), maxsplit=1)[0].lower()
    return ALIASES.get(n, n)


def test_environment_matches_pyproject():
    py = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(d) for d in py["dependencies"]}
    for extra in py["optional-dependencies"].values():
        wanted |= {_name(d) for d in extra}
    env = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    have = set()
    for d in env:
        if isinstance(d, dict):
            have |= {_name(x) for x in d["pip"] if not x.startswith("-e")}
        else:
            have.add(_name(d))
    have -= {"python", "pip"}
    assert wanted == have, (
        f"only in pyproject: {wanted - have}; only in environment.yml: {have - wanted}"
    )


def test_the_runs_reported_as_the_defaults_used_the_package_defaults():
    """The dev-log rows the methods chapter reports as the defaults ran with SCI2CL's defaults.

    The benchmark reads the package's defaults (``sci2cl_dev.package_defaults``);
    a default changed since those runs fails here until they are run again.
    """
    import json

    import pandas as pd

    from benchmarks.sci2cl_dev import BEFORE, CONFIGS, LOG, package_defaults
    from benchmarks.sci2cl_report import DEFAULT_CONFIG

    assert CONFIGS[DEFAULT_CONFIG] == {"init": package_defaults()}
    rows = pd.read_csv(LOG)
    rows = rows[rows["config"] == DEFAULT_CONFIG]
    assert len(rows) >= 3
    for params in rows["params"].unique():
        logged = json.loads(params)["init"]
        ran = {**BEFORE, **logged, "weights": {**BEFORE["weights"], **logged.get("weights", {})}}
        assert ran == package_defaults(), (
            f"{DEFAULT_CONFIG} ran {ran}; defaults are {package_defaults()}"
        )


def test_committed_outputs_drop_warnings_and_progress_bars_but_keep_the_rest():
    """The notebook runner strips warning and progress-bar streams, never results or other stderr."""
    import importlib.util

    import nbformat

    spec = importlib.util.spec_from_file_location(
        "run_notebooks", Path(__file__).resolve().parents[1] / "scripts" / "run_notebooks.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    stream = nbformat.v4.new_output
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.outputs = [
        stream("display_data", data={"text/plain": "/lib/live.py:260: UserWarning: install it"}),
        stream("stream", name="stderr", text="/x.py:3: FutureWarning: old API\n  warn(\n"),
        stream("stream", name="stderr", text="100%|##########| 3/3 [00:00<00:00, 34.50it/s]\n"),
        stream("stream", name="stdout", text="NMI 0.5\n"),
        stream("stream", name="stderr", text="model saved to run/\n"),
        nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=[]),
    ]
    # a progress bar drawn on stdout, in pieces, then a line that says why training stopped
    bar = nbformat.v4.new_code_cell("model.train()")
    bar.outputs = [
        stream("stream", name="stdout", text="\rstage 1/2:   0%|  | 0/4 [00:00<?, ?it/s]"),
        stream("stream", name="stdout", text="\rstage 1/2:  50%|# | 2/4 [00:01<00:01, 2.0it/s]"),
        stream(
            "stream", name="stdout", text="\n\rstage 2/2: 100%|##| 4/4 [00:02<00:00, 2.0it/s]\n"
        ),
        stream("stream", name="stdout", text="stopped early after epoch 2 of 2\n"),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell, bar])
    assert mod.clean_outputs(nb) == 6
    kept = nb.cells[0].outputs
    assert [o.get("name", o["output_type"]) for o in kept] == ["stdout", "stderr", "error"]
    assert kept[0]["text"] == "NMI 0.5\n"
    assert [o["text"] for o in nb.cells[1].outputs] == ["stopped early after epoch 2 of 2\n"]


def test_committed_notebooks_hold_no_path_of_the_machine_that_ran_them():
    """The runner makes repository paths relative to notebooks/ and names the data folder by its
    variable; the committed chapters carry neither this checkout's nor the data folder's path."""
    import importlib.util

    import nbformat

    root = Path(__file__).resolve().parents[1]
    spec = importlib.util.spec_from_file_location(
        "run_notebooks", root / "scripts" / "run_notebooks.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    params = nbformat.v4.new_code_cell(
        f'SMOKE = False\nDATA_DIR = "/data/x"\nRUN_DIR = "{root}/build/run"'
    )
    params.metadata["tags"] = ["injected-parameters"]
    out = nbformat.v4.new_code_cell("print(1)")
    out.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text=f"saved {root}/build/m, /data/x")
    ]
    nb = nbformat.v4.new_notebook(cells=[params, out])
    mod.portable(nb, "/data/x")
    assert (
        params.source
        == 'SMOKE = False\nDATA_DIR = None  # the data folder, from SCI2CL_DATA_DIR\nRUN_DIR = "../build/run"'
    )
    assert out.outputs[0]["text"] == "saved ../build/m, $SCI2CL_DATA_DIR"
    mod.hide_plumbing(nb)
    assert params.metadata["tags"] == ["injected-parameters", "remove-cell"]
    assert "tags" not in out.metadata or out.metadata["tags"] == []
    for p in sorted((root / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert str(root) not in p.read_text(), p.name


def test_book_sources_hold_no_control_characters():
    """A TeX command written into a Python string unescaped ("\\tilde", "\\alpha", "\\frac") becomes a
    tab, a bell or a form feed, and the page shows "ilde z" and "lpha": none in the book's text."""
    bad = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]|\t(?:ilde|imes|heta|au|ext|frac)")
    files = [
        *ROOT.glob("book/*.md"),
        *ROOT.glob("notebooks/[0-9][0-9]_*.ipynb"),
        ROOT / "README.md",
    ]
    assert len(files) > 5
    for f in files:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            assert not bad.search(line), f"{f.name}:{n}: {line[:60]!r}"
