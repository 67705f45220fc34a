"""Amortised inference: a conditional flow ``q(theta | x)`` trained on simulations of any
skyfit Posterior (neural posterior estimation), its calibration and importance refinement.

Needs zuko (``pip install 'skyfit[ml]'``). Layering: this package sits above
:mod:`skyfit.posterior` and :mod:`skyfit.inference`; nothing below imports it.
"""

from . import calibration as _calibration
from . import embeddings as _embeddings
from . import flows as _flows
from . import npe as _npe
from . import simulate as _simulate
from . import training as _training
from .calibration import *  # noqa: F403
from .embeddings import *  # noqa: F403
from .flows import *  # noqa: F403
from .npe import *  # noqa: F403
from .simulate import *  # noqa: F403
from .training import *  # noqa: F403

__all__ = [*_calibration.__all__, *_embeddings.__all__, *_flows.__all__, *_npe.__all__,
           *_simulate.__all__, *_training.__all__]
