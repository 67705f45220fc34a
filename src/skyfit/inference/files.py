"""Files that cannot lie: the checks every skyfit file goes through before it is believed.

A file is refused with a :class:`~skyfit.errors.CorruptFileError` that names it and says what
does not match: empty, not of the expected kind (a text file, another binary format), truncated,
or changed since it was written (checksum). HDF5 files carry a SHA-256 of their content (every
dataset's name, dtype, shape and bytes, and every attribute) as a root attribute.
"""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from .._checksum import verify_digest
from ..errors import CorruptFileError, SkyfitError

__all__: list[str] = []

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
CHECKSUM_ATTR = "sha256"


def describe_start(head: bytes) -> str:
    """What the first bytes of a file look like, for an error message."""
    if not head:
        return "it is empty (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        return "it is a zip archive (e.g. a plain torch.save file)"
    if head.startswith(HDF5_SIGNATURE):
        return "it is an HDF5 file"
    try:
        text = head[:40].decode("utf-8")
    except UnicodeDecodeError:
        return f"it starts with the bytes {head[:16]!r}"
    return f"it is a text file starting with {text!r}"


def read_head(path: Path, n: int = 64) -> bytes:
    """The first ``n`` bytes of ``path``; an empty file is a :class:`CorruptFileError`."""
    with open(path, "rb") as f:
        head = f.read(n)
    if not head:
        raise CorruptFileError(f"{path} is empty (0 bytes): the file was truncated or replaced")
    return head


def open_hdf5(path, what: str):
    """``h5py.File(path, "r")`` after checking that ``path`` is an HDF5 file at all.

    Arguments:
        path: the file.
        what: what the file should be, for the messages (``"a skyfit Samples file"``).
    """
    import h5py

    path = Path(path)
    head = read_head(path)
    if not head.startswith(HDF5_SIGNATURE):
        raise CorruptFileError(f"{path} is not {what}: {describe_start(head)}, not HDF5")
    try:
        return h5py.File(path, "r")
    except OSError as error:
        raise CorruptFileError(f"{path} is not a readable HDF5 file, so not {what} "
                               f"(truncated or damaged: {error})") from error


@contextmanager
def reading(path, what: str):
    """Turn any error other than skyfit's, raised while reading ``path``, into a
    :class:`CorruptFileError` that names the file (h5py raises OSError, KeyError or RuntimeError
    on damaged blocks, without the file's name)."""
    try:
        yield
    except (SkyfitError, FileNotFoundError):
        raise
    except Exception as error:
        raise CorruptFileError(f"{path} cannot be read as {what} (truncated or damaged: "
                               f"{type(error).__name__}: {error})") from error


def _update_with_value(digest, value) -> None:
    array = np.asarray(value)
    if array.dtype.kind == "O":  # variable-length strings
        digest.update(repr(array.tolist()).encode())
    else:
        digest.update(array.dtype.str.encode() + repr(array.shape).encode())
        digest.update(np.ascontiguousarray(array).tobytes())


def hdf5_digest(root) -> str:
    """SHA-256 over an HDF5 group's content: every dataset (name, dtype, shape, bytes) and every
    attribute (name, value) below it, in name order; the root's own checksum attribute is left
    out."""
    import h5py

    digest = hashlib.sha256()
    items: list[tuple[str, object]] = [("", root)]
    root.visititems(lambda name, obj: items.append((name, obj)))
    for name, obj in sorted(items, key=lambda item: item[0]):
        digest.update(b"\0node\0" + name.encode())
        if isinstance(obj, h5py.Dataset):
            _update_with_value(digest, obj[()])
        for key in sorted(obj.attrs):
            if obj is root and key == CHECKSUM_ATTR:
                continue
            digest.update(b"\0attr\0" + key.encode())
            _update_with_value(digest, obj.attrs[key])
    return digest.hexdigest()


def seal_hdf5(f) -> None:
    """Store the checksum of an HDF5 file's content, as the last thing written to it."""
    f.attrs[CHECKSUM_ATTR] = hdf5_digest(f)


def verify_hdf5(f, path, what: str) -> None:
    """Compare the content of an open HDF5 file with the checksum stored by :func:`seal_hdf5`."""
    def content_digest() -> str:
        try:
            return hdf5_digest(f)
        except SkyfitError:
            raise
        except Exception as error:  # h5py: OSError, KeyError, RuntimeError on damaged blocks
            raise CorruptFileError(f"{path}: its content cannot be read back ({error}); "
                                   "the file is damaged") from error

    stored = f.attrs.get(CHECKSUM_ATTR)
    verify_digest(path, None if stored is None else str(stored), content_digest, what)
