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


def test_package_defaults_are_the_development_configuration_the_methods_chapter_reports():
    """SCI2CL's defaults equal the dev-log configuration whose rows the methods chapter shows."""
    import inspect

    from benchmarks.sci2cl_dev import CONFIGS
    from benchmarks.sci2cl_report import DEFAULT_CONFIG
    from sci2cl import SCI2CL
    from sci2cl.model._sci2cl import DEFAULT_WEIGHTS

    params = inspect.signature(SCI2CL).parameters
    for k, v in CONFIGS[DEFAULT_CONFIG]["init"].items():
        default = DEFAULT_WEIGHTS if k == "weights" else params[k].default
        assert default == v, f"SCI2CL default {k}={default!r}, but {DEFAULT_CONFIG} has {v!r}"
    assert "train" not in CONFIGS[DEFAULT_CONFIG]


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
        stream("stream", name="stderr", text="/x.py:3: FutureWarning: old API\n  warn(\n"),
        stream("stream", name="stderr", text="100%|##########| 3/3 [00:00<00:00, 34.50it/s]\n"),
        stream("stream", name="stdout", text="NMI 0.5\n"),
        stream("stream", name="stderr", text="model saved to run/\n"),
        nbformat.v4.new_output("error", ename="ValueError", evalue="bad", traceback=[]),
    ]
    nb = nbformat.v4.new_notebook(cells=[cell])
    assert mod.clean_outputs(nb) == 2
    kept = nb.cells[0].outputs
    assert [o.get("name", o["output_type"]) for o in kept] == ["stdout", "stderr", "error"]
