"""Training an :class:`AmortizedPosterior` by maximum likelihood on simulated pairs, and
:func:`fit`: simulate + train in one call."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch

from ..posterior import Posterior
from .npe import AmortizedPosterior
from .simulate import TrainingSet, observation_of, simulate

__all__ = ["maximise_likelihood", "train", "fit"]


def _epoch_loss(log_prob: Callable[[torch.Tensor], torch.Tensor], index: torch.Tensor,
                batch_size: int, optimizer: torch.optim.Optimizer | None,
                parameters: list[torch.nn.Parameter], scheduler=None) -> float:
    total = 0.0
    for start in range(0, len(index), batch_size):
        idx = index[start:start + batch_size]
        loss = -log_prob(idx).mean()
        if optimizer is not None:
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(parameters, 5.0)
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
        total += float(loss.detach()) * len(idx)
    return total / len(index)


def maximise_likelihood(model: torch.nn.Module, log_prob: Callable[[torch.Tensor], torch.Tensor],
                        n: int, epochs: int = 200, batch_size: int = 256, lr: float = 1e-3,
                        validation_fraction: float = 0.1, patience: int = 20, seed: int = 0,
                        progress: bool = True, desc: str = "training",
                        schedule: str = "cosine") -> dict:
    """Fit ``model`` by maximising ``log_prob(index)``, the log-density of the data rows
    ``index`` (a closure over the data), with AdamW; returns the history.

    The last ``validation_fraction`` of the ``n`` rows are held out. ``schedule="cosine"``
    (default) anneals the learning rate from ``lr`` to ``lr / 100`` over the ``epochs`` budget,
    step by step: a short budget still ends at a small rate, so the final weights are not the
    noisy iterate of a large rate (that noise is the per-object error of an amortised
    posterior). ``"plateau"`` halves it when the validation loss has not improved for
    ``patience // 3`` epochs. Training stops after ``patience`` epochs without improvement and
    the weights of the best validation epoch are kept.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> data = 3.0 + 2.0 * torch.randn(1000, generator=g, dtype=torch.float64)
        >>> class Normal(torch.nn.Module):  # fit N(loc, scale^2) to the data
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.loc = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        ...         self.log_scale = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
        >>> m = Normal()
        >>> history = maximise_likelihood(m, lambda idx: torch.distributions.Normal(
        ...     m.loc, m.log_scale.exp()).log_prob(data[idx]), len(data), epochs=200, lr=0.05,
        ...     patience=50, progress=False)
        >>> round(m.loc.item(), 1), round(m.log_scale.exp().item(), 1)
        (3.0, 2.0)
        >>> train = data[:history["n_train"]]  # the maximum-likelihood estimates
        >>> round(train.mean().item(), 1), round(train.std(correction=0).item(), 1)
        (3.0, 2.0)
    """
    from tqdm.auto import tqdm

    n_val = max(1, int(round(validation_fraction * n)))
    if n - n_val < 2:
        raise ValueError(f"{n} rows leave no training set after {n_val} for validation")
    generator = torch.Generator().manual_seed(seed)
    parameters = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=lr, weight_decay=1e-5)
    if schedule not in ("cosine", "plateau"):
        raise ValueError(f"schedule must be 'cosine' or 'plateau', got {schedule!r}")
    steps_per_epoch = math.ceil((n - n_val) / batch_size)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=epochs * steps_per_epoch, eta_min=lr / 100) if schedule == "cosine"
        else torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=0.5, patience=max(1, patience // 3)))
    per_step = scheduler if schedule == "cosine" else None
    history = {"train_loss": [], "val_loss": [], "lr": []}
    best, best_state, since_best = math.inf, None, 0
    start = time.perf_counter()
    bar = tqdm(range(epochs), desc=desc, disable=not progress)
    for _ in bar:
        model.train()
        order = torch.randperm(n - n_val, generator=generator)
        train_loss = _epoch_loss(log_prob, order, batch_size, optimizer, parameters, per_step)
        model.eval()
        with torch.no_grad():
            val_loss = _epoch_loss(log_prob, torch.arange(n - n_val, n), 4096, None, parameters)
        if per_step is None:
            scheduler.step(val_loss)
        for key, value in (("train_loss", train_loss), ("val_loss", val_loss),
                           ("lr", optimizer.param_groups[0]["lr"])):
            history[key].append(value)
        bar.set_postfix(train=f"{train_loss:.3f}", val=f"{val_loss:.3f}")
        if val_loss < best - 1e-4:
            best, best_state, since_best = val_loss, copy.deepcopy(model.state_dict()), 0
        else:
            since_best += 1
            if since_best >= patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history.update(best_val_loss=best, epochs=len(history["val_loss"]),
                   train_time=time.perf_counter() - start, n_train=n - n_val, n_val=n_val)
    return history


def train(post: AmortizedPosterior, data: TrainingSet, epochs: int = 200,
          batch_size: int = 256, lr: float = 1e-3, validation_fraction: float = 0.1,
          patience: int = 20, seed: int = 0, progress: bool = True,
          schedule: str = "cosine") -> dict:
    """Maximise ``log q(theta | x)`` over the pairs; returns the training history.

    The standardisation of ``theta`` and ``x`` is set from the training part first; see
    :func:`maximise_likelihood` for the validation split, schedule and early stopping.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)  # theta ~ N(0, 1), x = theta + N(0, 0.5^2)
        >>> theta = torch.randn(1000, 1, generator=g, dtype=torch.float64)
        >>> x = theta + 0.5 * torch.randn(1000, 1, generator=g, dtype=torch.float64)
        >>> post = AmortizedPosterior(["theta"], [-torch.inf], [torch.inf], (1,), transforms=1,
        ...                           hidden=(16,), features=4, embedding_hidden=(16,))
        >>> history = train(post, TrainingSet(theta, x, ["theta"]), epochs=5, lr=1e-2,
        ...                 batch_size=50, progress=False)
        >>> draws, _ = post.draw(torch.tensor([1.0]), 4000)  # exact: N(0.8, 0.2) given x = 1
        >>> abs(draws.mean().item() - 0.8) < 0.15, abs(draws.std().item() - 0.2**0.5) < 0.1
        (True, True)
    """
    n_val = max(1, int(round(validation_fraction * len(data))))
    theta, x = data.theta, data.x.to(post.x_loc.dtype)
    post.standardise(theta[:-n_val], x[:-n_val])
    with torch.no_grad():
        w = post.to_w(theta).to(post.x_loc.dtype)
    return maximise_likelihood(
        post, lambda idx: post.log_prob_w(w[idx], post.context(x[idx])), len(data),
        epochs=epochs, batch_size=batch_size, lr=lr, validation_fraction=validation_fraction,
        patience=patience, seed=seed, progress=progress, schedule=schedule)


def fit(posterior: Posterior, n_train: int = 10_000, kind: str = "nsf",
        embedding: str = "mlp", features: int = 32, transforms: int = 5, hidden=(64, 64),
        embedding_hidden=(128, 128),
        epochs: int = 200, batch_size: int = 256, lr: float = 1e-3, patience: int = 20,
        validation_fraction: float = 0.1, seed: int = 0,
        simulator: Callable[[torch.Tensor], torch.Tensor] | None = None,
        training_set: TrainingSet | None = None, path=None,
        progress: bool = True, schedule: str = "cosine") -> AmortizedPosterior:
    """Simulate ``n_train`` pairs from ``posterior`` (its priors and noise model) and train a
    conditional flow ``q(theta | x)`` on them.

    The Posterior is a template: its data are not used for training, only their shape. The
    returned :class:`AmortizedPosterior` gives draws for any observation of that shape
    (``post.sample(x_obs, n)``) and ``post.info`` records the sizes and times.

    Arguments:
        posterior: the model with proper priors (see :func:`sample_prior`).
        n_train: simulated pairs (including the validation part).
        kind: ``"nsf"`` (default) or ``"glow"``. embedding: ``"mlp"``, ``"lightcurve"``,
            ``"stamp"``. features, transforms, hidden, embedding_hidden: network sizes.
        epochs, batch_size, lr, patience, validation_fraction, schedule: training (see
            :func:`maximise_likelihood`).
        seed: seeds the simulations, the weights and the batches.
        simulator: replaces the simulator read off the likelihood.
        training_set: pairs already simulated (then ``n_train`` is ignored).
        path: HDF5 file to stream the simulations to.

    Example:
        >>> import torch
        >>> from skyfit import GaussianLightCurve, PhotometryLikelihood, Posterior
        >>> lc = GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0)
        >>> lc.t0.valid, lc.sigma.valid, lc.peak_flux.valid = (-1, 1), (1, 3), (0.5, 2)
        >>> lc.to_dynamic()
        >>> t = torch.linspace(-5, 5, 11, dtype=torch.float64)
        >>> template = Posterior(PhotometryLikelihood(lc, t, torch.zeros(11), 0.1 * torch.ones(11)))
        >>> post = fit(template, n_train=500, epochs=2, progress=False)
        >>> post.sample(torch.zeros(11), 100).draws.shape
        (1, 100, 3)
    """
    start = time.perf_counter()
    if training_set is None:
        training_set = simulate(posterior, n_train, seed=seed, simulator=simulator, path=path,
                                progress=progress)
    sim_time = time.perf_counter() - start
    data_shape = tuple(training_set.x.shape[1:]) if simulator else tuple(
        observation_of(posterior).shape)
    post = AmortizedPosterior(posterior.names, posterior.lower, posterior.upper, data_shape,
                              kind=kind, embedding=embedding, features=features,
                              transforms=transforms, hidden=hidden, seed=seed,
                              embedding_hidden=embedding_hidden, units=posterior.units)
    history = train(post, training_set, epochs=epochs, batch_size=batch_size, lr=lr,
                    validation_fraction=validation_fraction, patience=patience, seed=seed,
                    progress=progress, schedule=schedule)
    post.info = dict(history, simulation_time=sim_time,
                     total_time=time.perf_counter() - start)
    return post
