"""skyfit on caskade's public API only: no private caskade names in src/, and what the removed
short paths used to promise still holds through caskade itself: a Posterior equals the same model
written in plain torch (value, gradient, batch), the graph is idle after an exception, caskade's
active cache, overrides and errors."""

import math
import re
from pathlib import Path

import caskade as ck
import pytest
import torch
from problems import supernova_problem

import skyfit
from skyfit._forward import forward

SRC = Path(__file__).resolve().parents[1] / "src"
# caskade's private state (and torch's private C bindings) that skyfit must not touch
PRIVATE = re.compile(r"_memos|_children\b|__dict__\[[\"']_value[\"']\]|_subgraphs|\w\._version\b"
                     r"|torch\._C\b")


def test_no_private_caskade_or_torch_names_in_src():
    hits = [f"{path.relative_to(SRC)}:{n}: {line.strip()}"
            for path in sorted(SRC.rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1) if PRIVATE.search(line)]
    assert not hits, "private names in src/:\n" + "\n".join(hits)
    assert PRIVATE.search("v._version") and PRIVATE.search("node._memos")
    assert not PRIVATE.search("torch.__version__") and not PRIVATE.search("from ._version import")


def _graph_is_idle(root: ck.Module, values: dict) -> bool:
    # no node left inside a simulation, every Param back at the value it had before the call
    return (not any(node.active for node in root.topological_ordering()
                    if isinstance(node, ck.Module))
            and all(torch.equal(p.value, values[p]) for p in root.all_params))


def _light_curve_posterior():
    lc = skyfit.GaussianLightCurve(t0=0.5, sigma=2.0, peak_flux=3.0)
    t = torch.linspace(-6, 6, 13, dtype=torch.float64)
    flux = lc.flux(t).detach() + 0.05 * torch.randn(13, generator=torch.Generator().manual_seed(1),
                                                     dtype=torch.float64)
    err = torch.full((13,), 0.1, dtype=torch.float64)
    lc.to_dynamic()
    prior = torch.distributions.Normal(torch.tensor(3.0, dtype=torch.float64), 0.5)
    post = skyfit.Posterior(skyfit.PhotometryLikelihood(lc, t, flux, err),
                            priors={"peak_flux": prior})
    return post, t, flux, err, prior


def _plain_torch(x, t, flux, err, prior):
    # the same model as a user writes it without skyfit: a Gaussian light curve, Gaussian
    # errors, a Normal prior on the peak flux and flat priors elsewhere
    t0, sigma, peak = x[..., 0:1], x[..., 1:2], x[..., 2]
    model = peak[..., None] * torch.exp(-0.5 * ((t - t0) / sigma) ** 2)
    loglike = (-0.5 * ((flux - model) / err) ** 2 - torch.log(err) - 0.5 * math.log(2 * math.pi))
    return loglike.sum(-1) + prior.log_prob(peak)


def test_posterior_equals_a_plain_torch_model_in_value_gradient_and_batch():
    post, t, flux, err, prior = _light_curve_posterior()
    assert post.names[2].endswith("peak_flux")
    x = torch.tensor([0.4, 2.1, 2.9], dtype=torch.float64)
    before = {p: p.value for p in post.joint.all_params}
    value, grad = post.value_and_grad(x)
    want = x.clone().requires_grad_(True)
    expected = _plain_torch(want, t, flux, err, prior)
    (expected_grad,) = torch.autograd.grad(expected, want)
    torch.testing.assert_close(value, expected.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(grad, expected_grad, rtol=1e-10, atol=1e-12)
    batch = torch.stack([x, x * 1.1, x * 0.9, x + 0.2])
    values, grads = post.value_and_grad(batch)  # torch.vmap over the caskade call
    want = batch.clone().requires_grad_(True)
    expected = _plain_torch(want, t, flux, err, prior)
    (expected_grad,) = torch.autograd.grad(expected.sum(), want)
    torch.testing.assert_close(values, expected.detach(), rtol=1e-12, atol=0)
    torch.testing.assert_close(grads, expected_grad, rtol=1e-10, atol=1e-12)
    assert _graph_is_idle(post.joint, before)


class _Fails(ck.Module):
    def __init__(self):
        super().__init__("fails")
        self.a = ck.Param("a", 1.0)
        self.fail = False

    @forward
    def __call__(self, a=None):
        if self.fail:
            raise RuntimeError("inside the model")
        return -0.5 * a**2


def test_graph_is_idle_after_an_exception_and_evaluates_again():
    model = _Fails()
    model.a.to_dynamic()
    post = skyfit.Posterior(model)
    before = {p: p.value for p in post.joint.all_params}
    model.fail = True
    with pytest.raises(RuntimeError, match="inside the model"):
        post.log_prob(torch.tensor([2.0], dtype=torch.float64))
    assert _graph_is_idle(post.joint, before)
    model.fail = False
    model.a.value = 0.5  # a Param can be set again: not left "active"
    assert post.log_prob(torch.tensor([2.0], dtype=torch.float64)).item() == -2.0


class _Cached(ck.Module):
    def __init__(self):
        super().__init__("cached")
        self.a = ck.Param("a", 1.0)
        self.calls = 0

    @ck.active_cache
    @forward
    def square(self, a=None):
        self.calls += 1
        return a**2

    @forward
    def __call__(self, a=None):
        return self.square() + self.square()


def test_active_cache_is_reset_between_evaluations():
    model = _Cached()
    model.a.to_dynamic()
    post = skyfit.Posterior(model)
    for a in (1.0, 2.0, 3.0):
        assert post.log_likelihood(torch.tensor([a], dtype=torch.float64)).item() == 2 * a**2
    assert model.calls == 3  # once per evaluation: cached within one, reset after it


class _Child(ck.Module):
    def __init__(self):
        super().__init__("child")
        self.s = ck.Param("s", 2.0)

    @forward
    def scaled(self, x, s=None):
        """Scale x by s."""
        return x * s


class _Parent(ck.Module):
    def __init__(self, child, override=None):
        super().__init__("parent")
        self.child = child
        self.b = ck.Param("b", 1.0)
        self.override = override

    @forward
    def __call__(self, x, b=None):
        if self.override is None:
            return self.child.scaled(x) + b
        return self.child.scaled(x, s=self.override) + self.child.scaled(x) + b


def test_forward_fills_params_like_caskade_and_keeps_its_overrides_and_errors():
    child = _Child()
    parent = _Parent(child)
    x = torch.tensor(3.0)
    assert parent(x).item() == 7.0  # static values, no params given
    parent.b.to_dynamic()
    child.s.to_dynamic()
    params = {"b": torch.tensor(1.0), "child": {"s": torch.tensor(5.0)}}
    assert parent(x, params).item() == 16.0
    # a keyword override of a child Param holds for that call only (caskade's OverrideParam)
    over = _Parent(_Child(), override=torch.tensor(10.0))
    assert over(x).item() == 30.0 + 6.0 + 1.0
    assert over.child.s.value.item() == 2.0
    # a Param without a value: caskade's own error
    empty = _Parent(_Child())
    empty.child.s = None
    with pytest.raises(ck.errors.FillParamsError, match="s"):
        empty(x)
    assert _Child.scaled.__doc__ == "Scale x by s." and _Child.scaled.__wrapped__


class _ReadsThroughGraph(ck.Module):
    def __init__(self):
        super().__init__("reader")
        self.s = ck.Param("s", 2.0)
        self.k = ck.Param("k", 3.0)

    @forward
    def scaled(self, x, s=None, **extra):  # k is read from the graph, not taken as an argument
        return x * s * self.k.value


class _OverridesK(ck.Module):
    def __init__(self):
        super().__init__("outer")
        self.reader = _ReadsThroughGraph()

    @forward
    def __call__(self, x):
        return self.reader.scaled(x, k=torch.tensor(10.0))


def test_forward_applies_an_override_of_a_param_outside_the_signature():
    # caskade overrides any Param of the module named by a keyword (2 * 10 here, not 2 * 3)
    assert _OverridesK()(torch.tensor(1.0)).item() == 20.0


def test_posterior_traces_into_one_graph_under_torch_compile():
    post, truth = supernova_problem(0)
    torch._dynamo.reset()
    try:
        compiled = torch.compile(post.log_likelihood, backend="eager", fullgraph=True)
        torch.testing.assert_close(compiled(truth), post.log_likelihood(truth), rtol=1e-13,
                                   atol=0)
    finally:
        torch._dynamo.reset()
    assert not post.joint.active


def test_several_parameter_groups_are_refused_clearly():
    lc = skyfit.GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0)
    t = torch.linspace(-5, 5, 11, dtype=torch.float64)
    like = skyfit.PhotometryLikelihood(lc, t, lc.flux(t).detach(), 0.1 * torch.ones(11))
    lc.t0.to_dynamic()
    lc.sigma.to_dynamic()
    lc.sigma.group = 1
    with pytest.raises(ValueError, match="several caskade groups"):
        skyfit.Posterior(like)
