"""emcee's HDF5 backend with a checksum that is extended at every step, so a resumed run can
trust its file.

emcee writes one row of the chain per step; hashing the whole file at each step would cost
O(steps^2). Instead each step extends a hash chain, ``h_k = sha256(h_(k-1) | row_k)`` over the
row's positions and log-densities as stored, and a state hash covers the hash chain, the
acceptance counts, the random state, the iteration and the data fingerprint (stored as JSON
when the run starts). Resuming recomputes both in one pass and compares the fingerprint with
the density's (:meth:`~skyfit.inference.LogDensity.fingerprint`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import emcee
import numpy as np

from ..errors import CorruptFileError
from .checkpoint import check_fingerprint
from .files import HDF5_SIGNATURE, describe_start, read_head, reading

__all__: list[str] = []

CHAIN_ATTR = "skyfit_chain_sha256"
STATE_ATTR = "skyfit_state_sha256"
FINGERPRINT_ATTR = "skyfit_fingerprint"
WHAT = "an emcee checkpoint written by skyfit"


def _row_hash(previous: str, coords: np.ndarray, log_prob: np.ndarray) -> str:
    digest = hashlib.sha256(previous.encode())
    for array in (coords, log_prob):
        array = np.ascontiguousarray(array)
        digest.update(array.dtype.str.encode() + array.tobytes())
    return digest.hexdigest()


def _state_hash(group, chain_hash: str) -> str:
    digest = hashlib.sha256(chain_hash.encode())
    digest.update(np.ascontiguousarray(group["accepted"][()]).tobytes())
    keys = ("iteration", FINGERPRINT_ATTR)
    for key in sorted(k for k in group.attrs if k.startswith("random_state_") or k in keys):
        value = np.asarray(group.attrs[key])
        digest.update(key.encode() + repr(value.tolist()).encode())
    return digest.hexdigest()


class CheckedHDFBackend(emcee.backends.HDFBackend):
    """``emcee.backends.HDFBackend`` whose every step also extends the file's checksum, and
    which stores ``fingerprint`` (JSON-ready, the density's) when a run starts."""

    def __init__(self, filename, fingerprint: dict | None = None, **kwargs):
        super().__init__(filename, **kwargs)
        self.fingerprint = fingerprint

    def reset(self, nwalkers, ndim):
        """Start a new run in the file (emcee's reset), recording the fingerprint."""
        super().reset(nwalkers, ndim)
        if self.fingerprint is not None:
            with self.open("a") as f:
                f[self.name].attrs[FINGERPRINT_ATTR] = json.dumps(self.fingerprint, sort_keys=True)

    def save_step(self, state, accepted):
        """Write one step as emcee does, then extend the chain hash and the state hash."""
        self._check(state, accepted)
        with self.open("a") as f:
            g = f[self.name]
            iteration = int(g.attrs["iteration"])
            g["chain"][iteration, :, :] = state.coords
            g["log_prob"][iteration, :] = state.log_prob
            if state.blobs is not None:
                g["blobs"][iteration, :] = state.blobs
            g["accepted"][:] += accepted
            for i, v in enumerate(state.random_state):
                g.attrs[f"random_state_{i}"] = v
            g.attrs["iteration"] = iteration + 1
            chain_hash = _row_hash(str(g.attrs.get(CHAIN_ATTR, "")), g["chain"][iteration],
                                   g["log_prob"][iteration])
            g.attrs[CHAIN_ATTR] = chain_hash
            g.attrs[STATE_ATTR] = _state_hash(g, chain_hash)


def verify_emcee_checkpoint(path, expect_fingerprint: dict | None = None) -> None:
    """Refuse an emcee checkpoint that is empty, not HDF5, not emcee's, or changed since written
    (:class:`~skyfit.errors.CorruptFileError`), or written for other data than
    ``expect_fingerprint`` (:class:`~skyfit.errors.DataMismatchError`).

    A file holding no step yet (a run stopped before its first step) passes: resuming it starts
    the run. Every other file must carry the checksums of :class:`CheckedHDFBackend`.
    """
    import h5py

    path = Path(path)
    head = read_head(path)
    if not head.startswith(HDF5_SIGNATURE):
        raise CorruptFileError(f"{path} is not {WHAT}: {describe_start(head)}, not HDF5")
    with reading(path, WHAT), h5py.File(path, "r") as f:
        _verify_group(f, path)
        n_steps = int(f["mcmc"].attrs["iteration"])
        stored = f["mcmc"].attrs.get(FINGERPRINT_ATTR)
    if expect_fingerprint is not None and n_steps > 0:  # a run with no step yet starts afresh
        check_fingerprint(path, None if stored is None else json.loads(stored), expect_fingerprint)


def _verify_group(f, path: Path) -> None:
    if "mcmc" not in f:
        raise CorruptFileError(f"{path} is an HDF5 file but not {WHAT} (no 'mcmc' group)")
    g = f["mcmc"]
    n = int(g.attrs["iteration"])
    if n == 0:
        return
    if CHAIN_ATTR not in g.attrs:
        raise CorruptFileError(f"{path} has no skyfit checksum, so it cannot be trusted as {WHAT}")
    chain_hash = ""
    for i in range(n):
        chain_hash = _row_hash(chain_hash, g["chain"][i], g["log_prob"][i])
    if chain_hash != str(g.attrs[CHAIN_ATTR]):
        raise CorruptFileError(f"{path}: the chain's checksum over its {n} steps does not match: "
                               "positions or log-densities were changed or damaged")
    if _state_hash(g, chain_hash) != str(g.attrs[STATE_ATTR]):
        raise CorruptFileError(f"{path}: the sampler state's checksum does not match: acceptance "
                               "counts, random state or iteration were changed or damaged")
