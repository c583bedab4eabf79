"""The mini-batches that training reads, from rows in memory or on disk (:class:`~sci2cl._rows.RowReader`)."""

from __future__ import annotations

import numpy as np
import torch

from .._rows import RowReader, is_backed_matrix

__all__ = ["CellBatches", "CodeReader", "RowReader", "is_backed_matrix"]


class CodeReader:
    """Each cell's batch number, read by rows as :class:`RowReader` reads counts.

    Parameters
    ----------
    codes
        ``(n_cells,)`` integers (the model's numbering of the batches).
    """

    backed = False

    def __init__(self, codes: np.ndarray):
        self.codes = np.asarray(codes, dtype=np.int64)
        self.shape = (len(self.codes),)

    def rows(self, idx: np.ndarray) -> np.ndarray:
        """The codes of cells ``idx``, ``(len(idx),)``."""
        return self.codes[np.asarray(idx)]


class CellBatches(torch.utils.data.Dataset):
    """The mini-batches of one epoch: item ``i`` is batch ``i``, a dict of dense tensors.

    The batches are redrawn by :meth:`set_epoch` from ``(seed, epoch)`` alone,
    so that every process of a distributed run, and every rerun, draws the
    same ones (the distributed sampler then deals the batches out to the
    processes).

    Parameters
    ----------
    readers
        ``{modality: RowReader}``, the same cells in the same order (and
        ``"batch"``: a :class:`CodeReader`, when the model corrects batches).
    cells
        Indices of the cells to batch, ``(n,)``.
    batch_size
        Cells per batch; batches of fewer than 2 cells are dropped.
    seed
        Seed of the shuffling.
    shuffle
        Redraw the batches each epoch (training); otherwise fixed, in order.
    block_size
        With ``shuffle``: cells are taken in blocks of ``block_size``
        consecutive cells (in the order of ``cells`` sorted), the blocks
        shuffled, so that a batch is read from disk in ``batch_size /
        block_size`` contiguous reads. 1 shuffles single cells.
    """

    def __init__(
        self,
        readers: dict[str, RowReader],
        cells: np.ndarray,
        batch_size: int,
        seed: int = 0,
        shuffle: bool = True,
        block_size: int = 1,
    ):
        self.readers = readers
        self.cells = np.sort(np.asarray(cells, dtype=np.int64))
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.block_size = max(1, int(block_size))
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Draw the batches of ``epoch``."""
        c = self.cells
        if self.shuffle:
            rng = np.random.default_rng([self.seed, int(epoch)])
            if self.block_size == 1:
                c = rng.permutation(c)
            else:
                blocks = [c[s : s + self.block_size] for s in range(0, len(c), self.block_size)]
                c = np.concatenate([blocks[i] for i in rng.permutation(len(blocks))])
        b = [c[s : s + self.batch_size] for s in range(0, len(c), self.batch_size)]
        self.batches = [x for x in b if len(x) >= 2]

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        idx = self.batches[i]
        return {m: torch.from_numpy(r.rows(idx)) for m, r in self.readers.items()}
