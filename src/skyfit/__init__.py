"""skyfit: differentiable forward models for astronomy and the inference that fits them.

Every public name of the subpackages is re-exported here, so ``from skyfit import Sersic``.
"""

from . import errors as errors
from . import plots as plots
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

__version__ = "0.1.0"
