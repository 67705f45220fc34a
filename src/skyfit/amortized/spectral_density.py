"""A conditional density of high-dimensional spectra given labels, ``p(spectrum | labels)``:
a flow on a linear compression (seed 002: outliers and hidden correlated lines).

A flow on ~10^3 pixels directly is costly to train; this one works on a compressed
representation, stated here: the spectrum ``x`` is split by a PCA basis ``V`` (``k`` components
of the training spectra) into coefficients ``c = V^T (x - mean)`` and the orthogonal residual
``r``. The density is ``log p(x | y) = log q(c | y) + log N(r; 0, s^2 I_{n-k})`` (a probabilistic
PCA whose in-subspace part is a conditional neural spline flow), a proper density on pixel
space. Anomalies inside the subspace (wrong line depths for the labels) lower ``q``; anomalies
outside it (a line not in the training set) raise ``|r|``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import ShapeError
from .flows import conditional_flow
from .training import maximise_likelihood

__all__ = ["SpectrumDensity", "roc_auc"]


class SpectrumDensity(nn.Module):
    """``p(spectrum | labels)`` on ``n_pixels`` pixels given ``n_labels`` labels (module doc).

    Arguments:
        n_pixels, n_labels: sizes. components: PCA components ``k`` kept.
        transforms, hidden: the conditional NSF on the standardised coefficients.
    """

    def __init__(self, n_pixels: int, n_labels: int, components: int = 24, transforms: int = 3,
                 hidden=(128, 128), seed: int = 0):
        super().__init__()
        self.n_pixels, self.n_labels = int(n_pixels), int(n_labels)
        self.components = int(components)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.flow = conditional_flow("nsf", self.components, self.n_labels, transforms,
                                         tuple(hidden))
        self.register_buffer("mean", torch.zeros(n_pixels))
        self.register_buffer("basis", torch.zeros(n_pixels, components))
        self.register_buffer("coef_scale", torch.ones(components))
        self.register_buffer("label_loc", torch.zeros(n_labels))
        self.register_buffer("label_scale", torch.ones(n_labels))
        self.register_buffer("residual_var", torch.ones(()))
        self.info: dict = {}

    def _check(self, spectra, labels) -> tuple[torch.Tensor, torch.Tensor]:
        spectra = torch.as_tensor(spectra).to(self.mean.dtype)
        labels = torch.as_tensor(labels).to(self.mean.dtype)
        if spectra.shape[-1] != self.n_pixels or labels.shape[-1] != self.n_labels:
            raise ShapeError(f"spectra (..., {self.n_pixels}) and labels (..., {self.n_labels}) "
                             f"expected, got {tuple(spectra.shape)} and {tuple(labels.shape)}")
        return spectra, labels

    def compress(self, spectra: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Standardised PCA coefficients ``(..., k)`` and the squared residual norm ``(...)``."""
        centred = spectra - self.mean
        coef = centred @ self.basis
        residual = centred - coef @ self.basis.T
        return coef / self.coef_scale, residual.pow(2).sum(-1)

    def context(self, labels: torch.Tensor) -> torch.Tensor:
        return (labels - self.label_loc) / self.label_scale

    def fit_compression(self, spectra: torch.Tensor, labels: torch.Tensor) -> None:
        """PCA basis, coefficient scales, residual variance and label scales from training data."""
        spectra, labels = self._check(spectra, labels)
        self.mean.copy_(spectra.mean(0))
        _, _, v = torch.linalg.svd(spectra - self.mean, full_matrices=False)
        self.basis.copy_(v[: self.components].T)
        coef, r2 = self.compress(spectra)
        self.coef_scale.copy_(coef.std(0).clamp(min=1e-8))
        self.residual_var.copy_(r2.mean() / (self.n_pixels - self.components))
        self.label_loc.copy_(labels.mean(0))
        self.label_scale.copy_(labels.std(0).clamp(min=1e-8))

    def log_prob(self, spectra, labels) -> torch.Tensor:
        """``log p(spectrum | labels)`` for ``spectra (..., n_pixels)``, ``labels (..., n_labels)``
        (the PCA-flow coefficients' density plus the residual's Gaussian; see the module)."""
        spectra, labels = self._check(spectra, labels)
        coef, r2 = self.compress(spectra)
        n_perp = self.n_pixels - self.components
        log_residual = -0.5 * (r2 / self.residual_var
                               + n_perp * torch.log(2 * math.pi * self.residual_var))
        return (self.flow(self.context(labels)).log_prob(coef) - self.coef_scale.log().sum()
                + log_residual)

    def sample(self, labels, n: int, seed: int = 0, noise: bool = False) -> torch.Tensor:
        """``n`` spectra ``(n, ..., n_pixels)`` given ``labels``: the in-subspace part from the
        flow, plus (``noise=True``) the isotropic residual."""
        labels = torch.as_tensor(labels).to(self.mean.dtype)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            coef = self.flow(self.context(labels)).sample((n,)) * self.coef_scale
            spectra = self.mean + coef @ self.basis.T
            if noise:
                spectra = spectra + self.residual_var.sqrt() * torch.randn_like(spectra)
        return spectra

    def fit(self, spectra, labels, epochs: int = 100, batch_size: int = 256, lr: float = 2e-3,
            patience: int = 15, seed: int = 0, progress: bool = True) -> dict:
        """Set the compression, then train the flow by maximum likelihood (validation split,
        early stopping, LR schedule as :func:`~skyfit.amortized.maximise_likelihood`)."""
        spectra, labels = self._check(spectra, labels)
        n_val = max(1, int(round(0.1 * len(spectra))))
        self.fit_compression(spectra[:-n_val], labels[:-n_val])
        with torch.no_grad():
            coef, _ = self.compress(spectra)
            context = self.context(labels)
        self.info = maximise_likelihood(
            self, lambda idx: self.flow(context[idx]).log_prob(coef[idx]), len(spectra),
            epochs=epochs, batch_size=batch_size, lr=lr, patience=patience, seed=seed,
            progress=progress, desc="spectrum density")
        return self.info

    def conditional_correlation(self, labels, n: int = 2000, seed: int = 0):
        """Pixel-pixel correlation ``(n_pixels, n_pixels)`` and standard deviation of spectra
        drawn at fixed ``labels (n_labels,)``: what still varies, and together, once the labels
        are known (e.g. the lines of an element missing from the labels)."""
        draws = self.sample(torch.as_tensor(labels), n, seed=seed)
        centred = draws - draws.mean(0)
        cov = centred.T @ centred / (n - 1)
        sd = cov.diag().clamp(min=1e-30).sqrt()
        return cov / (sd[:, None] * sd[None, :]), sd


def roc_auc(scores_negative, scores_positive) -> float:
    """Area under the ROC curve: the probability that a positive (anomalous) case scores higher
    than a negative one (ties count half)."""
    neg = np.asarray(scores_negative, dtype=np.float64)
    pos = np.asarray(scores_positive, dtype=np.float64)
    greater = (pos[:, None] > neg[None, :]).mean()
    ties = (pos[:, None] == neg[None, :]).mean()
    return float(greater + 0.5 * ties)
