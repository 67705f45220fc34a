"""skyfit: differentiable forward models for astronomy and the inference that fits them.

Every name in a subpackage's ``__all__`` is re-exported here, so ``from skyfit import Sersic``.
The building blocks beneath them stay in their modules: the pure torch functions
(``skyfit.sources.profiles``, ``skyfit.lenses.functions``), the sampler kernels
(``skyfit.inference.hmc``, ``.nuts``, ``.adaptation``) and the demo problem (``skyfit.demo``).
"""

from . import errors as _errors
from . import errors as errors
from . import generative as _generative
from . import inference as _inference
from . import instruments as _instruments
from . import lenses as _lenses
from . import lightcurves as _lightcurves
from . import likelihoods as _likelihoods
from . import params as _params
from . import plots as plots
from . import posterior as _posterior
from . import priors as _priors
from . import scenes as _scenes
from . import sources as _sources
from .errors import *  # noqa: F403
from .generative import *  # noqa: F403
from .inference import *  # noqa: F403
from .instruments import *  # noqa: F403
from .lenses import *  # noqa: F403
from .lightcurves import *  # noqa: F403
from .likelihoods import *  # noqa: F403
from .params import *  # noqa: F403
from .plots import *  # noqa: F403
from .posterior import *  # noqa: F403
from .priors import *  # noqa: F403
from .scenes import *  # noqa: F403
from .sources import *  # noqa: F403

__all__ = sorted({name for module in (_errors, _generative, _inference, _instruments, _lenses,
                                      _lightcurves, _likelihoods, _params, plots, _posterior,
                                      _priors, _scenes, _sources)
                  for name in module.__all__})
from ._version import __version__ as __version__  # noqa: E402
