"""Reader for the IDX format of MNIST and Fashion-MNIST (plain or gzip-compressed files).

An IDX file is a 4-byte magic number ``0x00 0x00 <type> <ndim>``, then ``ndim`` big-endian
uint32 sizes, then the values in C order (http://yann.lecun.com/exdb/mnist/, "file formats").

Example:
    >>> import tempfile, pathlib
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
    >>> write_idx(path, np.array([3, 1, 4], dtype=np.uint8))
    >>> read_idx(path).tolist()
    [3, 1, 4]
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import numpy as np

from distillscope.errors import DataError

#: IDX type byte -> big-endian numpy dtype.
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1",
    0x09: ">i1",
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def read_idx(path: str | Path, ndim: int | None = None) -> np.ndarray:
    """Read one IDX file into an array, decompressing ``*.gz`` files.

    Args:
        path: The file; names ending in ``.gz`` are gunzipped.
        ndim: The expected number of dimensions, checked against the header when given.

    Returns:
        A read-only array of the file's shape and native-endian dtype (uint8 files are
        returned without a copy).

    Raises:
        DataError: Naming the file, when it cannot be read, its magic number is wrong or its
            size does not match its header.
    """
    path = Path(path)
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"cannot read IDX file {path}: {exc}; delete it and fetch it again"
        ) from exc
    return parse_idx(raw, name=str(path), ndim=ndim)


def parse_idx(raw: bytes, name: str = "<bytes>", ndim: int | None = None) -> np.ndarray:
    """Parse the bytes of an IDX file; ``name`` is used in error messages."""
    fix = "delete it and fetch it again"
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_DTYPES:
        raise DataError(f"{name} is not an IDX file (bad magic number {raw[:4].hex()}); {fix}")
    dtype = np.dtype(IDX_DTYPES[raw[2]])
    dims = raw[3]
    if ndim is not None and dims != ndim:
        raise DataError(f"{name} has {dims} dimensions where {ndim} were expected; {fix}")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{name} is truncated inside its header; {fix}")
    shape = tuple(int(s) for s in np.frombuffer(raw, dtype=">u4", count=dims, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{name} holds {len(raw) - header} bytes of data where its header {shape} "
            f"says {expected}; {fix}"
        )
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data if dtype.itemsize == 1 else data.astype(dtype.newbyteorder("="))


def write_idx(path: str | Path, array: np.ndarray) -> None:
    """Write ``array`` as an IDX file (gzip-compressed when ``path`` ends in ``.gz``).

    Used by tests to build tiny datasets; the dtype must be one of :data:`IDX_DTYPES`.
    """
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype not in codes:
        raise ValueError(f"IDX cannot store dtype {array.dtype}")
    big = np.dtype(IDX_DTYPES[codes[dtype]])
    raw = (
        bytes([0, 0, codes[dtype], array.ndim])
        + np.asarray(array.shape, dtype=">u4").tobytes()
        + np.ascontiguousarray(array, dtype=big).tobytes()
    )
    path = Path(path)
    path.write_bytes(gzip.compress(raw, compresslevel=1) if path.suffix == ".gz" else raw)
