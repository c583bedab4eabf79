"""One entry point: ``python -m benchmarks <study> [options]`` (``--help`` of a study lists its options).

Studies (each writes its CSV under ``results/`` and is resumable):

- ``clustering``: the clustering benchmark of chapter 3 (every paired set, every peer);
- ``depth``: the same methods with the RNA counts thinned (shallow RNA);
- ``biology``: subpopulations, annotation audit and trajectories (chapters 4-6);
- ``scrcl``, ``spatial``: scRCL against its peers on scRNA-seq and tissue (chapters 7-8);
- ``sci2cl-dev``, ``readout-dev``, ``joint-start-dev``, ``subpop-dev``, ``scrcl-dev``,
  ``scrcl-spatial-dev``: development logs;
- ``sci2cl-speed``, ``sci2cl-scaling``, ``gpu-check``: time and memory;
- ``sci2cl-report``: the methods chapter's tables, from the committed CSVs.

Finished one-off studies are in ``benchmarks/archive`` (``python -m benchmarks.archive.<name>``).
"""

from __future__ import annotations

import importlib
import sys

#: study name -> module of ``benchmarks`` with a ``main() -> int``
STUDIES = {
    "clustering": "clustering",
    "depth": "depth",
    "biology": "biology",
    "scrcl": "scrcl",
    "spatial": "spatial",
    "sci2cl-dev": "sci2cl_dev",
    "scrcl-dev": "scrcl_dev",
    "scrcl-spatial-dev": "scrcl_spatial_dev",
    "sci2cl-speed": "sci2cl_speed",
    "sci2cl-scaling": "sci2cl_scaling",
    "readout-dev": "readout_dev",
    "joint-start-dev": "joint_start_dev",
    "subpop-dev": "subpop_dev",
    "gpu-check": "gpu_check",
    "sci2cl-report": "sci2cl_report",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0 if argv else 2
    name = argv[0].replace("_", "-")
    if name not in STUDIES:
        print(f"unknown study {argv[0]!r}; choose one of: {', '.join(STUDIES)}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"benchmarks.{STUDIES[name]}")
    sys.argv = [f"python -m benchmarks {name}", *argv[1:]]
    return int(module.main() or 0)


if __name__ == "__main__":
    sys.exit(main())
