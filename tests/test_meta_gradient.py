"""The project's train_forward meta-gradient against independent computations.

Independent reference (float64): the MAML meta-gradient of
    J(theta) = mean_t L_q_t(theta_K),  theta_{k+1} = theta_k - alpha * grad L_s_t(theta_k)
is  v = grad L_q(theta_K);  for k = K-1 .. 0:  v <- v - alpha * H_s(theta_k) v,
where each Hessian-vector product is a central difference of *first-order*
gradients (no double-grad kernel involved). First-order MAML is v = grad L_q(theta_K).
A second, cruder check compares directional derivatives of J itself (forward
passes only) with the meta-gradient.
A smooth activation (tanh) keeps finite differences free of ReLU kinks.
"""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from models.common import conv_op
from models.multitask.maml.dygraph_model import multi_step_loss_weights
from models.common.layers import cross_entropy
from models.multitask.maml.dygraph_model import DygraphModel
from models.multitask.maml.net import MAMLConvNet

ALPHA = 0.3
STEPS = 2


@pytest.fixture(autouse=True, params=["paddle", "custom"])
def conv_form(request, monkeypatch):
    """Every test for each convolution form the networks can use (models/common/conv_op)."""
    if request.param == "custom" and conv_op.load() is None:
        pytest.skip(f"the custom convolution operator does not build here: {conv_op.build_error()}")
    monkeypatch.setenv("FEWSHOT_CONV", request.param)


@pytest.fixture(autouse=True)
def float64():
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype("float32")


def make_config(first_order, downsample, reduction="mean", alpha=ALPHA, adapt_layers="all",
                first_order_epochs=0, multi_step_loss=False):
    return {"hyper_parameters": {"update_step": STEPS, "first_order_epochs": first_order_epochs,
                                 "multi_step_loss": multi_step_loss, "multi_step_loss_epochs": 4,
                                 "update_step_test": STEPS, "first_order": first_order,
                                 "downsample": downsample, "bn_channel": 6, "tasks_per_pass": 0,
                                 "per_step_bn_weights": False, "learn_inner_lr": False, "adapt_bn": True,
                                 "inner_loss_reduction": reduction, "adapt_layers": adapt_layers,
                                 "base_optimizer": {"learning_rate": alpha}, "n_way": 3, "n_way_test": 0},
            "data": {"image_shape": [1, 16, 16]}}


def forward(net, x, params, **kwargs):
    """The network with a list of weights in the documented order (the reference code's form)."""
    return net(x, dict(zip(net.param_names, params)), **kwargs)


def make_batch(rng, tasks=2, n_way=3, k_spt=2, k_query=2, size=16):
    batch = []
    for _ in range(tasks):
        batch.append((rng.rand(n_way * k_spt, 1, size, size), np.repeat(np.arange(n_way), k_spt),
                      rng.rand(n_way * k_query, 1, size, size), np.repeat(np.arange(n_way), k_query)))
    return batch


def make_net(downsample, seed=0, **network):
    """A small network (smooth activation) with every weight perturbed; NETWORK: more Conv4 options."""
    paddle.seed(seed)
    net = MAMLConvNet(n_way=3, hidden_channels=6, downsample=downsample, activation=F.tanh, **network)
    rng = np.random.RandomState(seed + 1)
    for p in list(net.weights().values()):  # non-trivial BN scales and biases
        p.set_value(p.numpy() + 0.1 * rng.randn(*p.shape))
    return net


def project_meta_gradient(net, batch, config, epoch=0):
    model = DygraphModel()
    model.set_epoch(epoch)
    metrics, _ = model.create_metrics(config)
    for p in list(net.weights().values()):
        p.clear_gradient()
    loss, _, _ = model.train_forward(net, metrics, batch, config)
    loss.backward()
    return [p.grad.numpy().copy() for p in list(net.weights().values())], float(loss)


def first_order_grad(net, params_np, x, y):
    params = [paddle.to_tensor(p, stop_gradient=False) for p in params_np]
    loss = cross_entropy(forward(net, paddle.to_tensor(x), params), paddle.to_tensor(y))
    return [g.numpy() for g in paddle.grad(loss, params)]


def reference_meta_gradient(net, batch, first_order, eps=1e-6, adapted=None):
    """adapted: indices of the parameters the inner loop updates (None: all).
    The adjoint of theta_{k+1} = theta_k - alpha * P grad L_s(theta_k), P the
    projection on the adapted parameters, is v <- v - alpha * H_s(theta_k) P v."""
    theta = [p.numpy().astype("float64") for p in list(net.weights().values())]
    mask = [adapted is None or i in adapted for i in range(len(theta))]
    total = [np.zeros_like(p) for p in theta]
    for xs, ys, xq, yq in batch:
        trajectory = [theta]
        for _ in range(STEPS):
            grads = first_order_grad(net, trajectory[-1], xs, ys)
            trajectory.append([p - ALPHA * g * m for p, g, m in zip(trajectory[-1], grads, mask)])
        v = first_order_grad(net, trajectory[-1], xq, yq)
        if not first_order:
            for point in reversed(trajectory[:-1]):
                d = [e * m for e, m in zip(v, mask)]
                plus = first_order_grad(net, [p + eps * e for p, e in zip(point, d)], xs, ys)
                minus = first_order_grad(net, [p - eps * e for p, e in zip(point, d)], xs, ys)
                v = [e - ALPHA * (a - b) / (2 * eps) for e, a, b in zip(v, plus, minus)]
        total = [t + e / len(batch) for t, e in zip(total, v)]
    return total


def meta_objective(net, batch, theta, step_weights=(0.0,) * (STEPS - 1) + (1.0,)):
    """J(theta) = mean over tasks of sum_k w_k L_q(theta_k), with plain
    first-order machinery (no graph kept)."""
    def query_loss(params, xq, yq):
        with paddle.no_grad():
            pt = [paddle.to_tensor(p) for p in params]
            return float(cross_entropy(forward(net, paddle.to_tensor(xq), pt), paddle.to_tensor(yq)))

    losses = []
    for xs, ys, xq, yq in batch:
        params, total = theta, 0.0
        for k in range(STEPS):
            params = [p - ALPHA * g for p, g in zip(params, first_order_grad(net, params, xs, ys))]
            if step_weights[k]:
                total += step_weights[k] * query_loss(params, xq, yq)
        losses.append(total)
    return float(np.mean(losses))


def central_difference_check(objective, point, gradient, rng, eps=1e-7):
    """GRADIENT (list of arrays) against central differences of OBJECTIVE
    (a function of a list of arrays) at POINT, in three random directions."""
    for _ in range(3):
        d = [rng.randn(*p.shape) for p in point]
        fd = (objective([p + eps * e for p, e in zip(point, d)])
              - objective([p - eps * e for p, e in zip(point, d)])) / (2 * eps)
        analytic = sum(float((g * e).sum()) for g, e in zip(gradient, d))
        assert abs(fd - analytic) < 1e-7 * max(1.0, abs(fd))


def directional_check(net, batch, ours, step_weights, seed):
    theta = [p.numpy() for p in list(net.weights().values())]
    central_difference_check(lambda th: meta_objective(net, batch, th, step_weights), theta, ours,
                             np.random.RandomState(seed))


def relative_error(a, b):
    a = np.concatenate([x.ravel() for x in a])
    b = np.concatenate([x.ravel() for x in b])
    return np.linalg.norm(a - b) / np.linalg.norm(b)


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
def test_second_order_meta_gradient_matches_hessian_vector_reference(downsample):
    net = make_net(downsample)
    batch = make_batch(np.random.RandomState(3))
    ours, _ = project_meta_gradient(net, batch, make_config(False, downsample))
    reference = reference_meta_gradient(net, batch, first_order=False)
    assert relative_error(ours, reference) < 1e-7


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
def test_second_order_meta_gradient_matches_directional_differences(downsample):
    net = make_net(downsample, seed=5)
    batch = make_batch(np.random.RandomState(7))
    ours, loss = project_meta_gradient(net, batch, make_config(False, downsample))
    theta = [p.numpy() for p in list(net.weights().values())]
    assert abs(meta_objective(net, batch, theta) - loss) < 1e-12
    # the error of the central difference shrinks as eps**2 (checked down to eps = 1e-7)
    central_difference_check(lambda th: meta_objective(net, batch, th), theta, ours, np.random.RandomState(11))


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
@pytest.mark.parametrize("channels", [1, 3])
def test_flattened_features_meta_gradient_matches_references(downsample, channels):
    """The authors' miniImageNet head: the classifier on every position of the last
    block (32 x 32 RGB or grey images: 2 x 2 positions), second order, against the
    Hessian-vector reference and central differences."""
    paddle.seed(41)
    net = MAMLConvNet(n_way=3, in_channels=channels, hidden_channels=4, downsample=downsample,
                      activation=F.tanh, features="flatten", image_size=32)
    assert net.feature_size == 4 * 2 * 2
    rng = np.random.RandomState(42)
    for p in list(net.weights().values()):
        p.set_value(p.numpy() + 0.1 * rng.randn(*p.shape))
    batch = [(rng.rand(6, channels, 32, 32), np.repeat(np.arange(3), 2), rng.rand(6, channels, 32, 32),
              np.repeat(np.arange(3), 2)) for _ in range(2)]
    config = make_config(False, downsample)
    config["data"]["image_shape"] = [channels, 32, 32]
    ours, loss = project_meta_gradient(net, batch, config)
    assert relative_error(ours, reference_meta_gradient(net, batch, first_order=False)) < 1e-7
    theta = [p.numpy() for p in list(net.weights().values())]
    assert abs(meta_objective(net, batch, theta) - loss) < 1e-12
    central_difference_check(lambda th: meta_objective(net, batch, th), theta, ours, np.random.RandomState(43))


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
def test_first_order_matches_reference_and_differs_from_second_order(downsample):
    net = make_net(downsample, seed=2)
    batch = make_batch(np.random.RandomState(4))
    first, _ = project_meta_gradient(net, batch, make_config(True, downsample))
    second, _ = project_meta_gradient(net, batch, make_config(False, downsample))
    assert relative_error(first, reference_meta_gradient(net, batch, first_order=True)) < 1e-10
    assert relative_error(first, second) > 1e-3


def test_authors_reduction_is_the_mean_loss_with_an_n_way_times_larger_step():
    """cbfinn/maml's xent sums the support losses and divides by K: for 3-way
    that is 3 x the mean loss, so alpha acts 3 times larger."""
    net = make_net("stride", seed=9)
    batch = make_batch(np.random.RandomState(10))
    authors, _ = project_meta_gradient(net, batch, make_config(False, "stride", "authors", ALPHA / 3))
    mean, _ = project_meta_gradient(net, batch, make_config(False, "stride", "mean", ALPHA))
    assert relative_error(authors, mean) < 1e-12
    assert relative_error(authors, reference_meta_gradient(net, batch, first_order=False)) < 1e-7


@pytest.mark.parametrize("first_order", [False, True])
def test_anil_meta_gradient_matches_reference(first_order):
    """adapt_layers: head (ANIL): only fc.weight and fc.bias move in the inner
    loop, yet the body still gets second-order terms through the head's gradient."""
    net = make_net("maxpool", seed=12)
    batch = make_batch(np.random.RandomState(13))
    ours, _ = project_meta_gradient(net, batch, make_config(first_order, "maxpool", adapt_layers="head"))
    head = [i for i, name in enumerate(net.param_names) if name.startswith("fc.")]
    reference = reference_meta_gradient(net, batch, first_order, adapted=head)
    assert relative_error(ours, reference) < (1e-10 if first_order else 1e-7)
    full, _ = project_meta_gradient(net, batch, make_config(first_order, "maxpool"))
    assert relative_error(ours, full) > 1e-3


def test_multi_step_loss_meta_gradient_matches_directional_differences():
    assert multi_step_loss_weights(2, 0, 4) == [0.5, 0.5]
    assert multi_step_loss_weights(2, 2, 4)[0] == pytest.approx(0.25)
    assert multi_step_loss_weights(2, 100, 4) == pytest.approx([0.015, 0.985])
    net = make_net("stride", seed=21)
    batch = make_batch(np.random.RandomState(22))
    config = make_config(False, "stride", multi_step_loss=True)
    ours, loss = project_meta_gradient(net, batch, config, epoch=1)
    weights = multi_step_loss_weights(STEPS, 1, 4)
    theta = [p.numpy() for p in list(net.weights().values())]
    assert abs(meta_objective(net, batch, theta, weights) - loss) < 1e-12
    directional_check(net, batch, ours, weights, seed=23)
    # After its multi_step_loss_epochs (4 here) MAML++ trains on the last step's loss alone.
    after, _ = project_meta_gradient(net, batch, config, epoch=4)
    last_only, _ = project_meta_gradient(net, batch, make_config(False, "stride"), epoch=4)
    assert relative_error(after, last_only) == 0


def test_derivative_order_annealing_is_first_order_then_second():
    net = make_net("stride", seed=31)
    batch = make_batch(np.random.RandomState(32))
    config = make_config(False, "stride", first_order_epochs=2)
    early, _ = project_meta_gradient(net, batch, config, epoch=1)
    late, _ = project_meta_gradient(net, batch, config, epoch=2)
    assert relative_error(early, reference_meta_gradient(net, batch, first_order=True)) < 1e-10
    assert relative_error(late, reference_meta_gradient(net, batch, first_order=False)) < 1e-7


def test_tasks_per_pass_does_not_change_the_meta_gradient():
    net, batch = make_net("stride"), make_batch(np.random.RandomState(7), tasks=3)
    together, loss_together = project_meta_gradient(net, batch, make_config(False, "stride"))
    config = make_config(False, "stride")
    config["hyper_parameters"]["tasks_per_pass"] = 2  # passes of 2 and 1 tasks
    apart, loss_apart = project_meta_gradient(net, batch, config)
    assert abs(loss_together - loss_apart) < 1e-12
    assert relative_error(apart, together) < 1e-12


@pytest.mark.parametrize("first_order", [False, True])
def test_authors_network_meta_gradient_matches_reference(first_order):
    """cbfinn/maml's network: batch norm with an offset and no scale, epsilon 1e-3,
    the offsets meta-learned but left out of the inner loop, the classifier from N(0, 1)."""
    net = make_net("stride", seed=61, bn_scale=False, bn_epsilon=1e-3, head_init="normal")
    assert not [n for n in net.param_names if n.startswith("bn") and n.endswith("weight")]
    assert 0.5 < float(net.weights()["fc.weight"].std()) < 1.5  # N(0, 1), not Xavier's ~0.17
    batch = make_batch(np.random.RandomState(63))
    config = make_config(first_order, "stride")
    config["hyper_parameters"]["adapt_bn"] = False
    ours, _ = project_meta_gradient(net, batch, config)
    adapted = [i for i, name in enumerate(net.param_names) if not name.startswith("bn")]
    reference = reference_meta_gradient(net, batch, first_order, adapted=adapted)
    assert relative_error(ours, reference) < (1e-10 if first_order else 1e-7)
    assert np.abs(ours[net.param_names.index("bn2.bias")]).max() > 1e-6  # the offsets are meta-learned
