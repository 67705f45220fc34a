"""Plots: image stacks (data / model / residuals), light curves, lensing and posterior figures.

Plots read results and arrays; they never run a fit. Each ``plot_*`` function returns a matplotlib
Figure; matplotlib (and ``corner``, graphviz) are imported only when a figure is made.
"""

from .files import save_figure, save_model_graph
from .images import plot_image_stack, plot_light_curve
from .lensing import plot_critical_curves, plot_lens_model
from .photometry import plot_photometry
from .posterior import corner_plot, trace_plot

__all__ = [
    "plot_image_stack",
    "plot_light_curve",
    "plot_photometry",
    "corner_plot",
    "trace_plot",
    "plot_critical_curves",
    "plot_lens_model",
    "save_figure",
    "save_model_graph",
]
