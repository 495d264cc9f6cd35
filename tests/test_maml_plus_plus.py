"""MAML++'s learned per-step inner rates and per-step batch-norm weights:
their meta-gradients from train_forward against central differences of an
independently written objective (float64; helpers of test_meta_gradient.py)."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from models.common.layers import cross_entropy
from models.multitask.maml.net import MAMLConvNet
from test_meta_gradient import (ALPHA, STEPS, central_difference_check, first_order_grad, forward, make_batch,
                                make_config, make_net, project_meta_gradient)


@pytest.fixture(autouse=True)
def float64():
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype("float32")


def test_learned_inner_learning_rates_get_the_right_gradient():
    """MAML++'s per-layer per-step rates: d J / d rates from train_forward
    against central differences of J in random directions of the rates."""
    paddle.seed(41)
    net = MAMLConvNet(n_way=3, hidden_channels=6, downsample="stride", activation=F.tanh,
                      learned_inner_lr=(ALPHA, STEPS))
    rng = np.random.RandomState(42)
    learned = list(net.inner_lrs().values())  # one [STEPS] tensor per weight, in the weights' order
    for rate in learned:
        rate.set_value(ALPHA + 0.05 * rng.randn(STEPS))
    batch = make_batch(np.random.RandomState(43))
    config = make_config(False, "stride")
    project_meta_gradient(net, batch, config)
    ours = np.stack([rate.grad.numpy() for rate in learned])
    rates = np.stack([rate.numpy() for rate in learned])
    theta = [p.numpy() for p in list(net.weights().values())]

    def objective(a):
        losses = []
        for xs, ys, xq, yq in batch:
            params = theta
            for k in range(STEPS):
                grads = first_order_grad(net, params, xs, ys)
                params = [p - a[i, k] * g for i, (p, g) in enumerate(zip(params, grads))]
            with paddle.no_grad():
                pt = [paddle.to_tensor(p) for p in params]
                losses.append(float(cross_entropy(forward(net, paddle.to_tensor(xq), pt), paddle.to_tensor(yq))))
        return float(np.mean(losses))

    central_difference_check(lambda a: objective(a[0]), [rates], [ours], rng, eps=1e-6)
    assert np.abs(ours).max() > 1e-4


def test_per_step_batch_norm_weights_meta_gradient_matches_directional_differences():
    """MAML++'s per-step batch-norm weights: step k's support forward and the
    query forward after step k + 1 use row k; the inner loop leaves them alone,
    the meta-gradient reaches every row."""
    net = make_net("maxpool", seed=51, bn_steps=STEPS)
    rng = np.random.RandomState(52)
    batch = make_batch(np.random.RandomState(53))
    config = make_config(False, "maxpool")
    config["hyper_parameters"]["per_step_bn_weights"] = True
    ours, loss = project_meta_gradient(net, batch, config)
    is_bn = [name.startswith("bn") for name in net.param_names]

    def grads_at(params, x, y, bn_step):
        pt = [paddle.to_tensor(p, stop_gradient=False) for p in params]
        value = cross_entropy(forward(net, paddle.to_tensor(x), pt, bn_step=bn_step), paddle.to_tensor(y))
        return [g.numpy() for g in paddle.grad(value, pt)]

    def objective(theta):
        losses = []
        for xs, ys, xq, yq in batch:
            params = theta
            for k in range(STEPS):
                grads = grads_at(params, xs, ys, k)
                params = [p if bn else p - ALPHA * g for p, g, bn in zip(params, grads, is_bn)]
            with paddle.no_grad():
                pt = [paddle.to_tensor(p) for p in params]
                losses.append(float(cross_entropy(forward(net, paddle.to_tensor(xq), pt, bn_step=STEPS - 1),
                                                  paddle.to_tensor(yq))))
        return float(np.mean(losses))

    theta = [p.numpy() for p in list(net.weights().values())]
    assert abs(objective(theta) - loss) < 1e-12
    central_difference_check(objective, theta, ours, rng)
    bn_scale = ours[net.param_names.index("bn1.weight")]
    assert bn_scale.shape == (STEPS, 6) and np.abs(bn_scale).min(axis=1).max() > 0
    assert np.abs(bn_scale[0] - bn_scale[1]).max() > 1e-6
