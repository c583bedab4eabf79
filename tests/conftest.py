"""Shared fixtures: tiny seeded synthetic data and the optional real-data mirror."""

import os
from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)

SHARED = Path(
    os.environ.get("SCI2CL_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")
)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The local data mirror, or skip when it is absent."""
    if not (SHARED / "multiome").is_dir():
        pytest.skip(f"real-data mirror not found at {SHARED} (set SCI2CL_DATA_DIR)")
    return SHARED


@pytest.fixture(scope="session")
def tiny_mdata():
    """A small simulated MuData (600 cells, 200 genes, 400 peaks), set up for SCI2CL."""
    import sci2cl

    m = sci2cl.datasets.simulate_multiome(n_cells=600, n_genes=200, n_peaks=400, seed=1)
    sci2cl.SCI2CL.setup_mudata(m, layer="counts")
    return m
