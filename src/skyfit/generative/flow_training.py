"""Training the latent flows on draws of q(z|x): a MAF by maximum likelihood, an IAF distilled
from it. The shared loop and :class:`TrainingHistory` are in :mod:`.training`."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable

import torch
from tqdm.auto import tqdm

from .flows import LatentFlow
from .training import TrainingHistory, _fit

__all__ = ["fit_flow", "distill_flow"]


def fit_flow(
    flow: LatentFlow,
    train: torch.Tensor,
    val: torch.Tensor,
    epochs: int = 60,
    batch_size: int = 256,
    lr: float = 3e-3,
    patience: int = 8,
    seed: int = 0,
    progress: bool = False,
    callback: Callable[[int, float, float], None] | None = None,
) -> TrainingHistory:
    """Fit ``flow`` to latent draws ``train (n, D)`` by maximum likelihood (mean NLL, nats).

    Sets the flow's standardisation from ``train`` first. An IAF's density takes ``D`` passes per
    layer, so it trains about ``D`` times slower per step than a MAF of the same size.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> truth = torch.distributions.Normal(torch.tensor([1.0, -1.0]), torch.tensor([0.5, 2.0]))
        >>> z = truth.sample((2000,))
        >>> maf = LatentFlow(2, kind="maf", transforms=2, hidden=(16,))
        >>> history = fit_flow(maf, z[:1500], z[1500:], epochs=5)
        >>> exact = -truth.log_prob(z[1500:]).sum(-1).mean().item()  # NLL of the true density
        >>> abs(history.best_val_loss - exact) < 0.05
        True
    """
    for name, d in (("train", train), ("val", val)):
        flow._check(d)
        if d.ndim != 2 or not torch.isfinite(d).all():
            raise ValueError(f"{name} latents must be a finite (n, {flow.features}) array")
    flow.standardise(train)

    def batch_loss(idx, g, epoch):
        return -flow.log_prob(train[idx]).mean()

    def val_loss():
        return -torch.cat([flow.log_prob(val[a : a + 4096])
                           for a in range(0, len(val), 4096)]).mean()

    return _fit(flow, len(train), batch_loss, val_loss, epochs, batch_size, lr, patience, seed,
                progress, f"flow ({flow.kind})", callback)


def distill_flow(
    student: LatentFlow,
    teacher: LatentFlow,
    val: torch.Tensor,
    steps: int = 1500,
    batch_size: int = 256,
    lr: float = 2e-3,
    seed: int = 0,
    progress: bool = False,
    callback: Callable[[int, float, float], None] | None = None,
    eval_every: int = 100,
) -> TrainingHistory:
    """Fit an IAF ``student`` to a fitted MAF ``teacher`` by minimising ``KL(student || teacher)``.

    ``KL = E_eps[log q(z(eps)) - log p(z(eps))]`` with ``z = student(eps)``: the student's
    sample and its log-density come in its one-pass direction and the teacher's density in its
    own one-pass direction, so each step costs about two MAF passes instead of the ``D`` passes
    per layer that maximum likelihood on an IAF needs (probability density distillation, as in
    van den Oord et al. 2017, arXiv:1711.10433). ``val`` latents (draws of ``q(z|x)``) give the
    validation loss: the student's exact mean NLL on them (``D`` passes, once per
    ``eval_every`` steps, "epoch" in the history). The student starts from the teacher's
    standardisation; the best validation state is kept.

    Example:
        >>> import torch
        >>> _ = torch.manual_seed(0)
        >>> truth = torch.distributions.Normal(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 0.3]))
        >>> z = truth.sample((2000,))
        >>> teacher = LatentFlow(2, kind="maf", transforms=2, hidden=(16,))
        >>> _ = fit_flow(teacher, z[:1500], z[1500:], epochs=5)
        >>> iaf = LatentFlow(2, kind="iaf", transforms=2, hidden=(16,))
        >>> history = distill_flow(iaf, teacher, z[1500:], steps=100, eval_every=50)
        >>> exact = -truth.log_prob(z[1500:]).sum(-1).mean().item()  # NLL of the true density
        >>> len(history.val_loss), abs(history.best_val_loss - exact) < 0.05
        (2, True)
    """
    if student.features != teacher.features:
        raise ValueError(f"student has {student.features} features, teacher {teacher.features}")
    student.loc.copy_(teacher.loc)
    student.scale.copy_(teacher.scale)
    teacher.requires_grad_(False)
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(student.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    hist = TrainingHistory()
    best, best_state, t0, running = math.inf, None, time.perf_counter(), 0.0
    bar = tqdm(range(steps), desc="flow (iaf, distilled)", disable=not progress, leave=False)
    for step in bar:
        student.train()
        eps = torch.randn(batch_size, student.features, generator=g)
        z, log_q = student.from_noise_and_log_prob(eps)
        loss = (log_q - teacher.log_prob(z)).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            student.eval()
            with torch.no_grad():
                v = -torch.cat([student.log_prob(val[a : a + 4096])
                                for a in range(0, len(val), 4096)]).mean().item()
            n = (step % eval_every) + 1
            hist.train_loss.append(running / n)
            hist.val_loss.append(v)
            hist.lr.append(opt.param_groups[0]["lr"])
            running = 0.0
            bar.set_postfix(kl=f"{hist.train_loss[-1]:.3g}", val=f"{v:.4g}")
            if callback is not None:
                callback(len(hist.val_loss) - 1, hist.train_loss[-1], v)
            if math.isfinite(v) and v < best:
                best, hist.best_epoch = v, len(hist.val_loss) - 1
                best_state = copy.deepcopy(student.state_dict())
    teacher.requires_grad_(True)
    if best_state is not None:
        student.load_state_dict(best_state)
    student.eval()
    hist.wall_time = time.perf_counter() - t0
    return hist
