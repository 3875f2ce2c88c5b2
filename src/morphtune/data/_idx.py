"""Reader for the IDX format of the MNIST files (LeCun et al.)."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["read_idx"]

# Third byte of the magic number -> big-endian numpy dtype.
_IDX_DTYPES: dict[int, np.dtype[Any]] = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def _read_bytes(path: Path) -> bytes:
    if path.suffix == ".gz":
        with gzip.open(path, "rb") as handle:
            return handle.read()
    return path.read_bytes()


def read_idx(path: str | Path) -> np.ndarray:
    """Array stored in an IDX file (optionally ``.gz``), in native byte order.

    The header is ``0x00 0x00 <dtype code> <ndim>`` followed by ``ndim`` big-endian
    uint32 sizes; anything else raises ``ValueError`` naming the file.
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path} is not an IDX file: {len(data)} bytes, shorter than a header")
    zero_a, zero_b, type_code, ndim = data[:4]
    if zero_a != 0 or zero_b != 0 or type_code not in _IDX_DTYPES or ndim < 1:
        raise ValueError(
            f"{path} is not an IDX file: bad magic number 0x{data[:4].hex()} "
            "(expected 0x0000 then a type code in "
            f"{[hex(code) for code in _IDX_DTYPES]} and ndim >= 1)"
        )
    header_end = 4 + 4 * ndim
    if len(data) < header_end:
        raise ValueError(f"{path}: header declares {ndim} dims but the file ends early")
    shape = tuple(int(size) for size in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(data) - header_end != expected:
        raise ValueError(
            f"{path}: header shape {shape} needs {expected} data bytes, "
            f"but the file holds {len(data) - header_end}"
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_end).reshape(shape)
    return array.astype(dtype.newbyteorder("="))
