"""Finished one-off studies (see README.md): each runs as ``python -m benchmarks.archive.<name>``."""

from __future__ import annotations

import sys
from collections.abc import Callable


def run_groups(argv: list[str] | None, size: int, doc: str, step: Callable[..., None]) -> int:
    """Call ``step(*group)`` on each run of ``size`` command-line arguments, in order.

    ``argv`` defaults to ``sys.argv[1:]``; when it is empty or does not split into groups of
    ``size``, ``doc`` (the study's usage) is printed and 2 returned.
    """
    argv = sys.argv[1:] if argv is None else argv
    if not argv or len(argv) % size:
        print(doc)
        return 2
    for i in range(0, len(argv), size):
        step(*argv[i : i + size])
    return 0
