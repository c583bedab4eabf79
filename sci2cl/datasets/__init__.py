"""Datasets: the registry, the data directory, hash-checked downloads, loading, and the simulator.

Data directory
--------------
One setting decides where datasets are read from and downloaded to:
the ``data_dir`` argument, else the environment variable ``SCI2CL_DATA_DIR``,
else ``data/`` of the repository checkout (or ``~/.cache/sci2cl`` for an
installed package). The local mirror layout (``multiome/``, ``scrna/``,
``labels/``, ``genesets/``) is the same as that of ``../shared/data``.

Downloads
---------
The paper's datasets are fetched with :mod:`pooch` from their public sources
into ``<data_dir>/<name>/``. A file that is already there is used without a
download. Where the source publishes no checksum, the SHA-256 of the first
download is written next to the file (``<file>.sha256``) and every later load
is checked against it (trust on first use); where the registry knows the hash,
the download itself is checked.
"""

from ._fetch import fetch_file
from ._load import load
from ._registry import (
    DATASETS,
    ENV_VAR,
    DatasetInfo,
    DatasetUnavailableError,
    RemoteFile,
    get_data_dir,
)
from ._simulate import (
    SIM_REGIMES,
    SIM_TYPES,
    simulate_multiome,
    simulate_multiome_to_disk,
    simulate_spatial,
)

__all__ = [
    "ENV_VAR",
    "DATASETS",
    "DatasetInfo",
    "DatasetUnavailableError",
    "RemoteFile",
    "get_data_dir",
    "load",
    "fetch_file",
    "simulate_multiome",
    "simulate_spatial",
    "simulate_multiome_to_disk",
    "SIM_TYPES",
    "SIM_REGIMES",
]
