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
