"""Hash-checked downloads with pooch (trust on first use where no checksum is published)."""

from __future__ import annotations

from pathlib import Path

from .._utils import file_sha256
from ._registry import ENV_VAR, DatasetUnavailableError, RemoteFile


def fetch_file(remote: RemoteFile, folder: Path, *, download: bool = True) -> Path:
    """Return the local path of ``remote``, downloading it with pooch when missing.

    Raises
    ------
    DatasetUnavailableError
        The file is absent and cannot be downloaded; the message says where
        to get it and where to put it.
    ValueError
        The file's SHA-256 differs from the registry's or the first download's.
    """
    import pooch

    target = folder / remote.name
    sidecar = target.with_name(target.name + ".sha256")
    if target.exists():
        expected = remote.sha256 or (sidecar.read_text().strip() if sidecar.exists() else None)
        if expected and file_sha256(target) != expected:
            raise ValueError(
                f"{target} does not match its SHA-256 ({expected[:12]}...); delete it to download again."
            )
        return target
    help_msg = (
        f"{remote.name} is missing. Download it from {remote.url} and place it at {target} "
        f"(or set {ENV_VAR} to a folder holding <dataset>/{remote.name})."
    )
    if not download:
        raise DatasetUnavailableError(help_msg)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        path = pooch.retrieve(
            remote.url,
            known_hash=remote.sha256 and f"sha256:{remote.sha256}",
            fname=remote.name,
            path=folder,
            progressbar=True,
        )
    except ValueError as e:  # pooch's hash mismatch
        raise ValueError(f"download of {remote.url} failed its hash check: {e}") from e
    except Exception as e:  # network or HTTP errors
        raise DatasetUnavailableError(
            f"{help_msg} (download failed: {type(e).__name__}: {e})"
        ) from e
    if remote.sha256 is None:
        sidecar.write_text(file_sha256(Path(path)) + "\n")
    return Path(path)
