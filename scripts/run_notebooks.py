"""Execute the book's notebooks with papermill (full or smoke runs) and report their wall times.

A full run stamps each executed notebook with the SHA-256 of its code cells
(``metadata.sci2cl.code_sha256``). With ``--stale-only`` (what ``make book``
uses) a notebook is executed again only when that stamp is missing, its code
changed since, or it has a cell that never ran or raised; otherwise the
committed full run is kept. ``make notebooks`` re-executes everything.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import nbformat
import papermill as pm

ROOT = Path(__file__).resolve().parents[1]


def code_hash(nb) -> str:
    """SHA-256 of a notebook's code cells, without the cell papermill injects."""
    code = [
        c.source
        for c in nb.cells
        if c.cell_type == "code" and "injected-parameters" not in c.metadata.get("tags", [])
    ]
    return hashlib.sha256("\n\x00".join(code).encode()).hexdigest()


def stale_reason(path: Path) -> str | None:
    """Why an executed full-run notebook must run again (``None``: it is current)."""
    if not path.exists():
        return "no executed copy"
    nb = nbformat.read(path, as_version=4)
    stamp = nb.metadata.get("sci2cl", {})
    if stamp.get("mode") != "full":
        return "not stamped by a full run"
    if stamp.get("code_sha256") != code_hash(nb):
        return "code changed since its full run"
    for c in nb.cells:
        if c.cell_type != "code" or not c.source.strip():
            continue
        if c.execution_count is None:
            return "a cell never ran"
        if any(o.get("output_type") == "error" for o in c.get("outputs", [])):
            return "a cell raised"
    return None


def _is_noise(text: str) -> bool:
    """A stderr stream of warnings or progress bars (not an error: those are ``error`` outputs)."""
    return any(k in text for k in ("Warning", "warn(", "warnings.warn", "it/s]", "s/it]", "\r"))


def _progress_free(text: str) -> str:
    """Return ``text`` as a terminal shows it, without the lines of progress bars.

    Each line is kept after its last carriage return; a progress-bar line has a rate
    (``it/s`` or ``s/it``) followed by ``]`` or a postfix.
    """
    lines = (line.rsplit("\r", 1)[-1] for line in text.split("\n"))
    return "\n".join(
        line for line in lines if not any(k in line for k in ("it/s]", "s/it]", "it/s,", "s/it,"))
    )


def clean_outputs(nb) -> int:
    """Drop warning and progress-bar streams from executed outputs; returns how many were dropped.

    Consecutive stdout streams are merged (as the book shows them) and their progress-bar
    lines removed, so that a progress bar drawn on stdout leaves its other lines (e.g. why
    training stopped) and nothing else.
    """
    dropped = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        keep = []
        for o in cell.get("outputs", []):
            shown = "".join(o.get("data", {}).get("text/plain", ""))  # e.g. rich's rendering
            if (
                o.get("output_type") == "stream"
                and o.get("name") == "stderr"
                and _is_noise(o["text"])
            ) or (o.get("output_type") == "display_data" and "Warning: " in shown):
                dropped += 1
            elif (
                o.get("output_type") == "stream"
                and o.get("name") == "stdout"
                and keep
                and (keep[-1].get("output_type") == "stream" and keep[-1].get("name") == "stdout")
            ):
                keep[-1]["text"] += o["text"]
                dropped += 1
            else:
                keep.append(o)
        for o in keep:
            if o.get("output_type") == "stream" and o.get("name") == "stdout":
                o["text"] = _progress_free(o["text"])
        before = len(keep)
        keep = [o for o in keep if o.get("output_type") != "stream" or o["text"].strip()]
        dropped += before - len(keep)
        cell.outputs = keep
    return dropped


def portable(nb, data_dir: str | None = None) -> None:
    """Drop the paths of the machine that ran a notebook.

    The repository's paths become relative to ``notebooks/`` (where chapters
    run); an outside data folder (``data_dir``) becomes the chapters'
    default, ``None``, in the parameters and ``$SCI2CL_DATA_DIR`` in outputs.
    """
    repo, rel = str(ROOT) + os.sep, ".." + os.sep

    def text(t: str) -> str:
        t = t.replace(repo, rel)
        return t.replace(data_dir, "$SCI2CL_DATA_DIR") if data_dir else t

    for cell in nb.cells:
        if "injected-parameters" in cell.metadata.get("tags", []):
            lines = [
                "DATA_DIR = None  # the data folder, from SCI2CL_DATA_DIR"
                if line.startswith("DATA_DIR = ") and repo not in line
                else line
                for line in cell.source.splitlines()
            ]
            cell.source = "\n".join(lines).replace(repo, rel)
        for o in cell.get("outputs", []) if cell.cell_type == "code" else []:
            if "text" in o:
                o["text"] = text(o["text"])
            for key, val in o.get("data", {}).items():
                if key.startswith("text/") and isinstance(val, str):
                    o["data"][key] = text(val)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in meta:
            meta[key] = text(meta[key])
    params = meta.get("parameters", {})
    for key, val in params.items():
        if isinstance(val, str):
            params[key] = None if key == "DATA_DIR" and repo not in val else text(val)


#: tags added per kind of cell: papermill's injected cell is removed from the page, the
#: parameters cell folded (a reader expands it to see what can be changed)
HIDE = {"injected-parameters": "remove-cell", "parameters": "hide-input"}


def hide_plumbing(nb) -> None:
    """Tag the parameter cells so that the book hides them (:data:`HIDE`)."""
    for cell in nb.cells:
        tags = cell.metadata.setdefault("tags", [])
        for kind, tag in HIDE.items():
            if kind in tags and tag not in tags:
                tags.append(tag)


def stamp(path: Path, mode: str, seconds: float) -> None:
    nb = nbformat.read(path, as_version=4)
    clean_outputs(nb)
    portable(nb, os.environ.get("SCI2CL_DATA_DIR"))
    hide_plumbing(nb)
    nb.metadata["sci2cl"] = {"mode": mode, "code_sha256": code_hash(nb), "seconds": round(seconds)}
    nbformat.write(nb, path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--mode", choices=["full", "smoke"], required=True)
    ap.add_argument("--out", required=True, help="folder for the executed notebooks")
    ap.add_argument("--only", nargs="*", help="notebook name prefixes to run (default: all)")
    ap.add_argument("--timeout", type=int, default=3600, help="per-cell timeout in seconds")
    ap.add_argument(
        "--stale-only",
        action="store_true",
        help="full mode: skip notebooks whose committed full run is current (see above)",
    )
    ap.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="one more notebook parameter (VALUE read as JSON when it parses, else a string); repeatable",
    )
    args = ap.parse_args()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    run_dir = (ROOT / "build" / f"run-{args.mode}").resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    params = {
        "SMOKE": args.mode == "smoke",
        "DATA_DIR": os.environ.get("SCI2CL_DATA_DIR", str(ROOT / "data")),
        "RUN_DIR": str(run_dir),
    }
    for p in args.param:
        name, sep, value = p.partition("=")
        if not sep or not name.isidentifier():
            ap.error(f"--param {p!r}: write NAME=VALUE")
        try:
            params[name] = json.loads(value)
        except json.JSONDecodeError:
            params[name] = value
    nbs = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    if args.only:
        nbs = [n for n in nbs if any(n.name.startswith(p) for p in args.only)]
    if not nbs:
        print("no notebooks found", file=sys.stderr)
        return 1
    if args.stale_only:
        keep = []
        for nb in nbs:
            why = stale_reason(out / nb.name) if args.mode == "full" else "smoke run"
            print(f"[{args.mode}] {nb.name}: {'current, kept' if why is None else why}")
            if why is not None:
                keep.append(nb)
        nbs = keep
    times = []
    for nb in nbs:
        t = time.perf_counter()
        print(f"[{args.mode}] {nb.name} ...", flush=True)
        pm.execute_notebook(
            str(nb),
            str(out / nb.name),
            parameters=params,
            kernel_name="python3",
            cwd=str(ROOT / "notebooks"),
            execution_timeout=args.timeout,
            progress_bar=False,
        )
        times.append((nb.name, time.perf_counter() - t))
        stamp(out / nb.name, args.mode, times[-1][1])
        print(f"[{args.mode}] {nb.name}: {times[-1][1]:.0f} s", flush=True)
    tsv = out / f"timings-{args.mode}.tsv"  # one line per notebook, updated in place
    old = dict(line.split("\t") for line in tsv.read_text().splitlines()) if tsv.exists() else {}
    old.update({n: f"{s:.1f}" for n, s in times})
    tsv.write_text("".join(f"{n}\t{s}\n" for n, s in sorted(old.items())))
    print(f"total {sum(s for _, s in times):.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
