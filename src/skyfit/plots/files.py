"""Writing figures and model graphs to files."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

__all__ = ["save_figure", "save_model_graph"]


def save_figure(fig, path: str | Path, dpi: int = 150) -> Path:
    """Save ``fig`` to ``path`` and close it; returns the path.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> import matplotlib.pyplot as plt
        >>> fig, ax = plt.subplots()
        >>> path = save_figure(fig, Path(tempfile.mkdtemp()) / "figure.png")
        >>> path.name, path.exists(), plt.fignum_exists(fig.number)  # written, and closed
        ('figure.png', True, False)
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return path


def save_model_graph(module, path: str | Path) -> Path | None:
    """Render a caskade module's graph with graphviz to ``path`` + ``.png``.

    Needs the graphviz ``dot`` program; without it the DOT source is written to ``path.gv``
    and a warning says how to install graphviz.

    Example:
        >>> import tempfile
        >>> from pathlib import Path
        >>> from skyfit import Sersic
        >>> out = save_model_graph(Sersic(), Path(tempfile.mkdtemp()) / "graph")
        >>> out is None or (out.suffix, out.exists()) == (".png", True)  # None without graphviz
        True
    """
    path = Path(path)
    dot = module.graphviz()
    if shutil.which("dot") is None:
        gv = path.with_suffix(".gv")
        gv.write_text(dot.source)
        warnings.warn(f"graphviz 'dot' not found: wrote the DOT source to {gv}; install graphviz "
                      "(apt-get install graphviz / conda install graphviz) to get a PNG",
                      stacklevel=2)
        return gv
    return Path(dot.render(filename=path.name, directory=str(path.parent), format="png",
                           cleanup=True))
