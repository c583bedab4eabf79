"""A disk cache of each method's embedding per (dataset, method, seed), shared by the runners.

The clustering benchmark (chapter 3) keeps every embedding it computes here, and
the biology runner (chapters 4-6) reads them, so that the chapters analyse the
very embeddings the benchmark scored and nothing is trained twice. An entry is
valid for one code version and one prepared dataset
(:func:`benchmarks.clustering.code_version`, :func:`~benchmarks.clustering.data_version`);
another key is a miss. Files: ``build/embeddings/<dataset>/<method>__<seed>__<key hash>.npz``
(``embedding``, the kNN ``adjacency`` where the method gives a graph, and the key): runs with
other settings (a smoke run's capped epochs and fewer cells) keep their own files and never
replace the full run's.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "embeddings"


def _key_text(key: dict) -> str:
    return json.dumps(key, sort_keys=True, default=str)


def path(ds: str, method: str, seed: int, key: dict, cache: Path = CACHE) -> Path:
    """Where the embedding of ``method`` at ``seed`` on ``ds`` under ``key`` is kept."""
    h = hashlib.sha256(_key_text(key).encode()).hexdigest()[:10]
    return cache / ds / f"{method.replace(' ', '_').replace('/', '_')}__{seed}__{h}.npz"


def save(ds: str, method: str, seed: int, res: dict, key: dict, cache: Path = CACHE) -> Path:
    """Keep ``res["embedding"]`` (and ``res["adjacency"]`` when it is a graph), atomically."""
    p = path(ds, method, seed, key, cache)
    p.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"embedding": np.asarray(res["embedding"], np.float32),
              "key": np.array(_key_text(key))}  # fmt: skip
    adj = res.get("adjacency")
    if adj is not None and sp.issparse(adj):
        a = sp.csr_matrix(adj)
        arrays.update(adj_data=a.data, adj_indices=a.indices, adj_indptr=a.indptr,
                      adj_shape=np.array(a.shape))  # fmt: skip
    tmp = p.with_name(p.stem + ".tmp.npz")
    np.savez_compressed(tmp, **arrays)
    os.replace(tmp, p)
    return p


def load(ds: str, method: str, seed: int, key: dict, cache: Path = CACHE) -> dict | None:
    """``{"embedding", "adjacency"}`` kept for this key, or ``None``."""
    p = path(ds, method, seed, key, cache)
    if not p.exists():
        return None
    with np.load(p, allow_pickle=False) as z:
        if str(z["key"]) != _key_text(key):
            return None
        adj = None
        if "adj_data" in z:
            adj = sp.csr_matrix(
                (z["adj_data"], z["adj_indices"], z["adj_indptr"]), shape=tuple(z["adj_shape"])
            )
        return {"embedding": z["embedding"], "adjacency": adj}
