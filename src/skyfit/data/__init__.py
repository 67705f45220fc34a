"""Observed data as skyfit reads it: photometric tables of transients."""

from .examples import EXAMPLES, load_example
from .photometry import AB_MINUS_VEGA_BLANTON_ROWEIS_2007, Photometry

__all__ = ["Photometry", "AB_MINUS_VEGA_BLANTON_ROWEIS_2007", "load_example", "EXAMPLES"]
