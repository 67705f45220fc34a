"""Real public transient photometry shipped with skyfit (see ``examples/README.md``)."""

from __future__ import annotations

from pathlib import Path

from .photometry import AB_MINUS_VEGA_BLANTON_ROWEIS_2007, Photometry

__all__ = ["load_example", "EXAMPLES"]

_HERE = Path(__file__).resolve().parent / "examples"

#: name -> (file, class, redshift, keywords for :class:`Photometry`)
EXAMPLES = {
    "LSQ12dlf": ("LSQ12dlf.csv", "SLSN-I", 0.25,
                 dict(system="Vega", vega_offsets=AB_MINUS_VEGA_BLANTON_ROWEIS_2007,
                      bands=("U", "B", "V", "R", "I"))),
    "PS1-10jh": ("PS1-10jh.csv", "TDE", 0.1696,
                 dict(system="AB", bands=("NUV", "g", "r", "i", "z"))),
}
"""The shipped light curves: name -> (file, class, redshift, Photometry keywords)."""


def load_example(name: str, **kwargs) -> Photometry:
    """One of the shipped light curves as a :class:`Photometry` (AB magnitudes, zero point 25).

    ``"LSQ12dlf"``: a superluminous supernova in U B V R I (Vega, converted to AB with
    :data:`AB_MINUS_VEGA_BLANTON_ROWEIS_2007`). ``"PS1-10jh"``: a tidal disruption event in
    g r i z and GALEX NUV, with upper limits. Sources and licence: ``examples/README.md`` beside
    this file. Keywords override those of :class:`Photometry` (e.g. ``zero_point``).

    Example:
        >>> phot = load_example("PS1-10jh")
        >>> len(phot), phot.bands, int(phot.upper_limit.sum()), phot.redshift
        (176, ('NUV', 'g', 'r', 'i', 'z'), 66, 0.1696)
    """
    if name not in EXAMPLES:
        raise KeyError(f"no example {name!r}; examples are {list(EXAMPLES)}")
    file, _, redshift, options = EXAMPLES[name]
    return Photometry.read(_HERE / file, **{**options, "redshift": redshift, **kwargs})
