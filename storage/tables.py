"""Reading a user's table of observations: CSV, or netCDF with variables along one dimension."""

from __future__ import annotations

from pathlib import Path

import numpy as np

NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf")


def read_table(path: Path, what: str) -> dict[str, np.ndarray]:
    """The columns of a CSV file (header row: the names) or the variables of a netCDF file.

    Args:
        what: the setting that named the file, for messages (``infer.file``).

    Raises:
        ValueError: the file is missing or unreadable, naming ``what``.
    """
    if not path.is_file():
        raise ValueError(f"{what}: {path} does not exist")
    if path.suffix.lower() in NETCDF_SUFFIXES:
        import xarray as xr

        try:
            ds = xr.open_dataset(path)
        except Exception as err:  # noqa: BLE001 (any reader failure is the file's fault)
            raise ValueError(f"{what}: {path} is not a readable netCDF file ({err})") from None
        with ds:
            return {str(k): np.asarray(v.values) for k, v in ds.variables.items()}
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{what}: {path} is not a readable CSV file ({err})") from None
    return {str(k).strip(): frame[k].to_numpy() for k in frame.columns}
