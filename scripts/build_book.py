"""Stage the book sources with a set of executed notebooks and build the HTML (jupyter-book 1.x)."""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--src", default=".", help="repository root")
    ap.add_argument(
        "--notebooks", default=None, help="folder of executed notebooks (default: notebooks/)"
    )
    ap.add_argument("--out", required=True, help="the HTML goes to OUT/_build/html")
    ap.add_argument("--strict", action="store_true", help="fail on any Sphinx warning")
    args = ap.parse_args()
    src = Path(args.src).resolve()
    out = Path(args.out).resolve()
    stage = out / "_src"
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    shutil.copy(src / "_config.yml", stage / "_config.yml")
    for f in (src / "book").iterdir():
        if f.is_file() and f.suffix in {".md", ".yml", ".bib", ".png", ".svg"}:
            shutil.copy(f, stage / f.name)
    shutil.copytree(src / "book" / "_ext", stage / "_ext")
    if (src / "book" / "_generated").is_dir():  # tables written from results/ and included by pages
        shutil.copytree(src / "book" / "_generated", stage / "_generated")
    # the intro's answer table, recomputed from the results the chapters read
    sys.path.insert(0, str(src))
    from benchmarks import claims

    claims.write(stage / "_generated" / "claims.md", src / "results")
    nb_src = Path(args.notebooks).resolve() if args.notebooks else src / "notebooks"
    (stage / "notebooks").mkdir()
    for nb in sorted(nb_src.glob("[0-9][0-9]_*.ipynb")):
        shutil.copy(nb, stage / "notebooks" / nb.name)
    mj = src / "build" / "mathjax"
    if not (mj / "es5" / "tex-svg.js").exists():
        print("offline MathJax missing: run `make build/mathjax/es5/tex-svg.js`", file=sys.stderr)
        return 1
    shutil.copytree(mj, stage / "_mathjax" / "mathjax")
    cmd = [
        str(Path(sys.executable).with_name("jupyter-book")),
        "build",
        str(stage),
        "--path-output",
        str(out),
    ]
    if args.strict:
        cmd += ["-W", "--keep-going"]
    print(" ".join(cmd), flush=True)
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
