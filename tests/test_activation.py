"""The short paths around caskade (skyfit._activation, skyfit._forward) against caskade itself:
same values, same gradients, same graph state after a call, caskade's errors and overrides."""

import caskade as ck
import pytest
import torch
from problems import supernova_problem

import skyfit
from skyfit._forward import forward
from skyfit.errors import ParameterVectorError


def _graph_is_idle(root: ck.Module) -> bool:
    nodes = root.topological_ordering()
    return (all(not node._memos for node in nodes)
            and all(p._value is None for p in root.all_params))


def _through_caskade(post, x):
    return post.joint(post._param_values(x))  # caskade's ActiveContext + fill_params


def test_fast_activation_equals_caskade_value_gradient_and_batch():
    post, truth = supernova_problem(0)
    assert post._activation.usable()
    x = (truth * 1.01).requires_grad_(True)
    fast = post.log_likelihood(x)
    (g_fast,) = torch.autograd.grad(fast, x)
    slow = _through_caskade(post, x)
    (g_slow,) = torch.autograd.grad(slow, x)
    assert fast.item() == slow.item()
    assert torch.equal(g_fast, g_slow)
    assert _graph_is_idle(post.joint)
    batch = torch.stack([truth, truth * 0.99, truth * 1.02])
    looped = torch.stack([_through_caskade(post, row) for row in batch])
    torch.testing.assert_close(post.log_likelihood(batch), looped, rtol=1e-13, atol=0)
    assert _graph_is_idle(post.joint)


def test_graph_state_is_restored_after_an_exception():
    post, truth = supernova_problem(0)

    def body():
        assert post.joint.active and post.likelihood.online
        raise RuntimeError("inside the model")

    with pytest.raises(RuntimeError, match="inside the model"):
        post._activation(post._param_values(truth), body, None)
    assert _graph_is_idle(post.joint)
    # the model still evaluates, and a Param can be set again (not left "active")
    post.likelihood.model.sources[0].Re.value = 0.3
    assert torch.isfinite(post.log_likelihood(truth))


def test_changed_graph_is_named_and_an_unchanged_layout_is_picked_up_again():
    post, truth = supernova_problem(0)
    scene = post.likelihood.model
    # a new static-only node: the graph changes, the dynamic parameters do not
    scene.psf.sigma = skyfit.Param("sigma", scene.psf.sigma.value.item(), valid=(0.0, None))
    before = post._activation._dynamic
    value = post.log_likelihood(truth)
    assert post._activation._dynamic is not before and post._activation.usable()
    assert value.item() == _through_caskade(post, truth).item()
    scene.point_sources[0].x0.to_static()  # now the Posterior's layout no longer fits
    with pytest.raises(ParameterVectorError, match="changed after"):
        post.log_likelihood(truth)


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
    assert post._activation.usable()
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
        torch.testing.assert_close(compiled(truth), _through_caskade(post, truth), rtol=1e-13,
                                   atol=0)
    finally:
        torch._dynamo.reset()
    assert _graph_is_idle(post.joint)


def test_several_parameter_groups_are_refused_clearly():
    lc = skyfit.GaussianLightCurve(t0=0.0, sigma=2.0, peak_flux=1.0)
    t = torch.linspace(-5, 5, 11, dtype=torch.float64)
    like = skyfit.PhotometryLikelihood(lc, t, lc.flux(t).detach(), 0.1 * torch.ones(11))
    lc.t0.to_dynamic()
    lc.sigma.to_dynamic()
    lc.sigma.group = 1
    with pytest.raises(ValueError, match="several caskade groups"):
        skyfit.Posterior(like)
