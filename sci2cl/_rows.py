"""Rows of a count matrix in memory or on disk.

An AnnData opened in backed mode (``anndata.read_h5ad(path, backed="r")``,
``mudata.read_h5mu(path, backed=True)``) keeps ``.X`` on disk; :class:`RowReader`
reads the rows a mini-batch needs from it (anndata's own sparse-dataset reader),
so that memory does not grow with the number of cells. In memory, the matrix is
held once as CSR (or dense) float32 and rows are indexed directly.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

__all__ = ["RowReader", "is_backed_matrix"]


def is_backed_matrix(X) -> bool:
    """Whether ``X`` is a matrix on disk (an anndata sparse dataset or an h5py dataset)."""
    import h5py
    from anndata.abc import CSCDataset, CSRDataset

    return isinstance(X, CSRDataset | CSCDataset | h5py.Dataset)


def _runs(idx: np.ndarray) -> list[tuple[int, int]]:
    """Contiguous runs ``[(start, stop), ...]`` of the sorted, unique indices ``idx``."""
    if len(idx) == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) != 1) + 1
    starts = np.r_[idx[0], idx[breaks]]
    stops = np.r_[idx[breaks - 1] + 1, idx[-1] + 1] if len(breaks) else np.array([idx[-1] + 1])
    return list(zip(starts.tolist(), stops.tolist()))


#: HDF5 chunks smaller than this (values) make a reader's memory grow with what it has read
MIN_CHUNK = 4096


def _warn_small_chunks(X) -> None:
    """Warn when the arrays of a backed sparse matrix are stored in tiny HDF5 chunks."""
    import warnings

    group = getattr(X, "group", None)
    if group is None:
        return
    small = {
        a: group[a].chunks[0]
        for a in ("indptr", "indices", "data")
        if a in group and getattr(group[a], "chunks", None) and group[a].chunks[0] < MIN_CHUNK
    }
    if small:
        warnings.warn(
            f"the matrix on disk ({group.name}) stores {sorted(small)} in HDF5 chunks of "
            f"{min(small.values())} values: reading it this way keeps memory in proportion to the "
            "part of the file read. Rewrite the file with larger chunks (e.g. read it in chunks and "
            "write it with h5py chunks of 2**20 values; sci2cl.datasets.simulate_multiome_to_disk "
            "does this)",
            UserWarning,
            stacklevel=3,
        )


class RowReader:
    """Dense float32 rows of a cells x features matrix in memory or on disk.

    Parameters
    ----------
    X
        A scipy sparse matrix, a numpy array, or a backed matrix (an anndata
        CSR dataset or an h5py dataset), shape ``(n_cells, n_features)``.
    """

    def __init__(self, X):
        self.backed = is_backed_matrix(X)
        if self.backed:
            from anndata.abc import CSCDataset

            if isinstance(X, CSCDataset):
                raise ValueError(
                    "the matrix on disk is stored by column (CSC): reading cells from it means "
                    "reading the whole file. Write it by row (CSR), e.g. adata.X = "
                    "adata.X.tocsr() before write_h5ad, or load it into memory."
                )
            self.X = X
            _warn_small_chunks(X)
        elif sp.issparse(X):
            self.X = sp.csr_matrix(X, dtype=np.float32)
        else:
            self.X = np.asarray(X, np.float32)
        self.shape = tuple(X.shape)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """Rows ``idx`` (any order, no repeats needed), shape ``(len(idx), n_features)``."""
        idx = np.asarray(idx, dtype=np.int64)
        if not self.backed:
            out = self.X[idx]
            return out.toarray() if sp.issparse(out) else np.asarray(out)
        order = np.argsort(idx, kind="stable")
        sidx = idx[order]
        uniq, inv = np.unique(sidx, return_inverse=True)
        parts = [self.X[a:b] for a, b in _runs(uniq)]  # one read per contiguous run
        block = (
            sp.vstack(parts, format="csr").toarray()
            if sp.issparse(parts[0])
            else np.concatenate([np.asarray(p) for p in parts])
        )
        out = np.empty((len(idx), self.shape[1]), np.float32)
        out[order] = block[inv]
        return out

    def chunks(self, chunk_size: int = 10_000):
        """``(start, rows)`` over the whole matrix in order, ``chunk_size`` rows at a time.

        ``rows`` is sparse (CSR) or dense as stored; memory holds one chunk.
        """
        n = self.shape[0]
        for s in range(0, n, chunk_size):
            rows = self.X[s : min(s + chunk_size, n)]
            yield s, (sp.csr_matrix(rows) if sp.issparse(rows) else np.asarray(rows, np.float32))
