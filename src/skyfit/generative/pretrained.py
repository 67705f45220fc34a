"""Named training configurations and ``load_pretrained``: shipped weights or a seeded retrain."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .training import TrainingConfig

__all__ = ["PRETRAINED", "load_pretrained", "pretrained_path"]

PRETRAINED: dict[str, TrainingConfig] = {
    # the model shipped in skyfit/generative/pretrained/ and used by the tutorial and tests
    "galaxy32": TrainingConfig(),
    # seconds to train: for quick checks of the machinery (it still learns, but coarsely)
    "tiny": TrainingConfig(size=16, latent_dim=4, channels=(8, 16), hidden=64, n_train=256,
                           n_val=64, epochs=3, batch_size=32, draws=4, flow_transforms=2,
                           flow_hidden=(32, 32), flow_epochs=3, distill_steps=60),
}
"""Named training configurations of the galaxy prior: ``"galaxy32"`` (32x32 stamps, the model
shipped with the package) and ``"tiny"`` (trains in seconds, for checks).

Example:
    >>> PRETRAINED["galaxy32"].size
    32
"""

PACKAGE_DIR = Path(__file__).resolve().parent / "pretrained"


def _fingerprint(config: TrainingConfig) -> str:
    text = json.dumps(config.to_dict(), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def pretrained_path(name: str) -> Path:
    """Where the package ships the weights of configuration ``name`` (may not exist).

    Example:
        >>> pretrained_path("galaxy32").name, pretrained_path("galaxy32").exists()
        ('galaxy32.pt', True)
    """
    return PACKAGE_DIR / f"{name}.pt"


def _cache_dir() -> Path:
    root = os.environ.get("SKYFIT_CACHE") or os.environ.get("XDG_CACHE_HOME")
    return Path(root) / "skyfit" if root else Path.home() / ".cache" / "skyfit"


def load_pretrained(name: str = "galaxy32", path: str | Path | None = None,
                    retrain: bool = False, progress: bool = False):
    """A trained :class:`~skyfit.generative.GalaxyModel` of the named configuration.

    Looks, in order, at ``path`` (if given), the weights shipped with the package, and the user
    cache (``$SKYFIT_CACHE`` or ``~/.cache/skyfit``); the first file whose recorded training
    config matches :data:`PRETRAINED[name] <PRETRAINED>` is loaded. Otherwise (or with
    ``retrain=True``) the model is trained from scratch with the package's own code and fixed
    seed (:func:`~skyfit.generative.train_galaxy_model`) and saved to ``path`` or the cache.

    Example:
        >>> model = load_pretrained("galaxy32")
        >>> model.sample(2).shape
        torch.Size([2, 32, 32])
    """
    from .model import GalaxyModel
    from .training import train_galaxy_model

    if name not in PRETRAINED:
        raise KeyError(f"no pretrained configuration {name!r}; have {sorted(PRETRAINED)}")
    config = PRETRAINED[name]
    fp = _fingerprint(config)
    cached = _cache_dir() / f"{name}-{fp}.pt"
    candidates = [Path(path)] if path is not None else []
    candidates += [pretrained_path(name), cached]
    if not retrain:
        for file in candidates:
            if file.is_file():
                model = GalaxyModel.load(file)
                if model.info.get("config") == config.to_dict():
                    model.info["pretrained"] = name  # how a saved model names it
                    return model
    model = train_galaxy_model(config, progress=progress)
    target = Path(path) if path is not None else cached
    model.save(target)
    model.info["pretrained"] = name
    return model
