"""Meta-SGD's meta-gradient, through the initialization theta and the per-element
rates alpha, against central differences of an independently written objective
(float64, forward passes and first-order gradients only):
    J(theta, alpha) = mean_t L_q_t(theta_K),  theta_{k+1} = theta_k - alpha * grad L_s_t(theta_k)

Mutation check (run when the test was written, and kept as
test_the_check_fails_when_the_rates_are_detached): with the rates detached from
the graph in the inner loop (MetaSGDNet.inner_lrs returning alpha.detach()),
alpha gets no gradient and the directional check below fails."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from models.common.layers import cross_entropy
from models.multitask.meta_sgd.dygraph_model import DygraphModel
from models.multitask.meta_sgd.net import MetaSGDNet
from test_meta_gradient import first_order_grad, forward, make_batch


@pytest.fixture(autouse=True)
def float64():
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype("float32")


def make_config(steps, first_order=False, downsample="stride"):
    return {"hyper_parameters": {"update_step": steps, "update_step_test": steps, "first_order": first_order,
                                 "first_order_epochs": 0, "multi_step_loss": False, "multi_step_loss_epochs": 4,
                                 "downsample": downsample, "bn_channel": 6, "tasks_per_pass": 0, "adapt_bn": True,
                                 "adapt_layers": "all", "n_way": 3, "n_way_test": 0,
                                 "inner_rate_init_low": 0.05, "inner_rate_init_high": 0.3},
            "data": {"image_shape": [1, 16, 16]}}


def make_net(downsample, seed):
    paddle.seed(seed)
    net = MetaSGDNet(rate_init=(0.05, 0.3), n_way=3, hidden_channels=6, downsample=downsample, activation=F.tanh)
    rng = np.random.RandomState(seed + 1)
    for p in net.weights().values():  # non-trivial batch-norm scales and biases
        p.set_value(p.numpy() + 0.1 * rng.randn(*p.shape))
    return net


def meta_gradient(net, batch, config):
    """(d J / d theta, d J / d alpha) from the model's train_forward and backward."""
    model = DygraphModel()
    metrics, _ = model.create_metrics(config)
    net.clear_gradients()
    loss, _, _ = model.train_forward(net, metrics, batch, config)
    loss.backward()

    def grad(p):
        return np.zeros(p.shape) if p.grad is None else p.grad.numpy().copy()

    return [grad(p) for p in net.weights().values()], [grad(a) for a in net.inner_lrs().values()]


def objective(net, batch, theta, alpha, steps, first_order=False):
    """J written apart from the model: plain first-order gradients, alpha elementwise."""
    losses = []
    for xs, ys, xq, yq in batch:
        params = theta
        for _ in range(steps):
            grads = first_order_grad(net, params, xs, ys)
            params = [p - a[0] * g for p, a, g in zip(params, alpha, grads)]
        with paddle.no_grad():
            logits = forward(net, paddle.to_tensor(xq), [paddle.to_tensor(p) for p in params])
            losses.append(float(cross_entropy(logits, paddle.to_tensor(yq))))
    return float(np.mean(losses))


def directional_errors(net, batch, steps, gradient, rng, which, eps=1e-6):
    """|finite difference - analytic| / max(1, |finite difference|) along random
    unit directions of theta, alpha or both (WHICH); five-point central differences
    (truncation error O(eps^4); a step small enough to cross no max-pool tie)."""
    theta = [p.numpy() for p in net.weights().values()]
    alpha = [a.numpy() for a in net.inner_lrs().values()]
    errors = []
    for _ in range(3):
        d_theta = [rng.randn(*p.shape) * (which != "alpha") for p in theta]
        d_alpha = [rng.randn(*a.shape) * 0.1 * (which != "theta") for a in alpha]
        norm = np.sqrt(sum(float((d ** 2).sum()) for d in d_theta + d_alpha))  # unit length
        d_theta, d_alpha = [d / norm for d in d_theta], [d / norm for d in d_alpha]

        def at(sign):
            return objective(net, batch, [p + sign * eps * d for p, d in zip(theta, d_theta)],
                             [a + sign * eps * d for a, d in zip(alpha, d_alpha)], steps)

        fd = (8 * (at(1) - at(-1)) - (at(2) - at(-2))) / (12 * eps)
        analytic = sum(float((g * d).sum()) for g, d in zip(gradient[0] + gradient[1], d_theta + d_alpha))
        errors.append(abs(fd - analytic) / max(1.0, abs(fd)))
    return errors


@pytest.mark.parametrize("steps,downsample", [(1, "stride"), (1, "maxpool"), (2, "stride")])
def test_meta_gradient_through_initialization_and_rates_matches_central_differences(steps, downsample):
    """Second order, the paper's one step (and two, alpha reused), both network styles."""
    net = make_net(downsample, seed=61)
    batch = make_batch(np.random.RandomState(62))
    gradient = meta_gradient(net, batch, make_config(steps, downsample=downsample))
    # every rate gets a gradient but the conv biases' (batch norm takes out any constant shift)
    names = list(net.inner_lrs())
    assert min(np.abs(g).max() for n, g in zip(names, gradient[1]) if not n.endswith("conv.bias")
               and not (n.startswith("conv") and n.endswith(".bias"))) > 1e-6
    rng = np.random.RandomState(63)
    for which in ("theta", "alpha", "both"):
        assert max(directional_errors(net, batch, steps, gradient, rng, which)) < 1e-8, which


def test_the_check_fails_when_the_rates_are_detached(monkeypatch):
    """The mutation of the module docstring, kept: alpha detached in the inner
    loop leaves the theta directions right and fails the alpha directions."""
    net = make_net("stride", seed=61)
    batch = make_batch(np.random.RandomState(62))
    attached = MetaSGDNet.inner_lrs
    monkeypatch.setattr(MetaSGDNet, "inner_lrs", lambda self: {n: a.detach() for n, a in attached(self).items()})
    gradient = meta_gradient(net, batch, make_config(1))
    monkeypatch.setattr(MetaSGDNet, "inner_lrs", attached)
    rng = np.random.RandomState(63)
    assert max(directional_errors(net, batch, 1, gradient, rng, "theta")) < 1e-8
    assert min(directional_errors(net, batch, 1, gradient, rng, "alpha")) > 1e-4


def test_first_order_meta_sgd_still_learns_the_rates():
    """first_order: the inner gradient is a constant, but theta' = theta - alpha * g
    depends on alpha directly: d J / d alpha = -g * d L_q / d theta'."""
    net = make_net("stride", seed=71)
    batch = make_batch(np.random.RandomState(72))
    theta_grad, alpha_grad = meta_gradient(net, batch, make_config(1, first_order=True))
    theta = [p.numpy() for p in net.weights().values()]
    alpha = [a.numpy() for a in net.inner_lrs().values()]
    expected_theta = [np.zeros_like(p) for p in theta]
    expected_alpha = [np.zeros_like(a) for a in alpha]
    for xs, ys, xq, yq in batch:
        g = first_order_grad(net, theta, xs, ys)
        adapted = [p - a[0] * gi for p, a, gi in zip(theta, alpha, g)]
        q = first_order_grad(net, adapted, xq, yq)
        for i in range(len(theta)):
            expected_theta[i] += q[i] / len(batch)
            expected_alpha[i] += -(g[i] * q[i])[None] / len(batch)
    for ours, reference in zip(theta_grad + alpha_grad, expected_theta + expected_alpha):
        np.testing.assert_allclose(ours, reference, rtol=1e-9, atol=1e-12)
