"""Plots: image stacks (data / model / residuals), light curves, lensing and posterior figures.

Plots read results and arrays; they never run a fit.
"""

from __future__ import annotations

__all__: list[str] = []
