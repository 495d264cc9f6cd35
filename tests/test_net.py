"""The network's forward passes against plain Paddle layers, and the
all-tasks-at-once pass against each task alone (float64)."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from models.common.layers import cross_entropy
from models.multitask.maml.dygraph_model import DygraphModel, InnerLoop, adapt_to_support
from models.multitask.maml.net import MAMLConvNet


@pytest.fixture(autouse=True)
def float64():
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype("float32")


def perturbed_net(downsample, n_way=4, channels=5, bn_steps=0, seed=0, in_channels=1):
    paddle.seed(seed)
    net = MAMLConvNet(n_way=n_way, in_channels=in_channels, hidden_channels=channels, downsample=downsample,
                      bn_steps=bn_steps)
    rng = np.random.RandomState(seed)
    for p in list(net.weights().values()):  # non-trivial conv biases and batch-norm weights
        p.set_value(p.numpy() + 0.2 * rng.randn(*p.shape))
    return net


def plain_forward(params, x, downsample):
    """The conv-4 network from Paddle's own layers: F.conv2d with its bias,
    F.batch_norm on the batch's statistics, F.max_pool2d, F.linear."""
    h = x
    for i in range(4):
        w, b, scale, shift = params[4 * i: 4 * i + 4]
        if downsample == "stride":
            h = F.conv2d(h, w, b, stride=2, padding="SAME")
        else:
            h = F.conv2d(h, w, b, stride=1, padding=1)
        c = h.shape[1]
        h = F.relu(F.batch_norm(h, paddle.zeros([c]), paddle.ones([c]), scale, shift, training=True))
        if downsample == "maxpool":
            h = F.max_pool2d(h, 2, 2)
    return F.linear(h.mean(axis=[2, 3]), params[-2], params[-1])


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
@pytest.mark.parametrize("size,in_channels", [(28, 1), (17, 1), (17, 3)])
def test_forward_matches_plain_paddle_layers(downsample, size, in_channels):
    net = perturbed_net(downsample, in_channels=in_channels)
    x = paddle.to_tensor(np.random.RandomState(1).rand(6, in_channels, size, size))
    expected = plain_forward(list(net.weights().values()), x, downsample).numpy()
    for twice_differentiable in (True, False):
        got = net(x, twice_differentiable=twice_differentiable).numpy()
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_all_tasks_at_once_equal_each_task_alone(downsample, in_channels):
    tasks, rng = 3, np.random.RandomState(2)
    net = perturbed_net(downsample, bn_steps=2, in_channels=in_channels)
    x = paddle.to_tensor(rng.rand(tasks, 4, in_channels, 20, 20))
    # Every task its own weights: the network's, moved by a different amount.
    per_task = [[paddle.to_tensor(p.numpy() + 0.1 * rng.randn(*p.shape)) for p in list(net.weights().values())]
                for _ in range(tasks)]
    per_task = [dict(zip(net.param_names, ps)) for ps in per_task]
    stacked = {name: paddle.stack([ps[name] for ps in per_task]) for name in net.param_names}
    for twice_differentiable in (True, False):
        for bn_step in (0, 1, 5):
            together = net.forward_tasks(x, stacked, twice_differentiable, bn_step).numpy()
            for t in range(tasks):
                alone = net(x[t], per_task[t], twice_differentiable, bn_step).numpy()
                np.testing.assert_allclose(together[t], alone, rtol=1e-10, atol=1e-12)


def test_evaluating_a_batch_of_episodes_equals_one_episode_at_a_time():
    rng = np.random.RandomState(3)
    config = {"hyper_parameters": {"update_step_test": 2, "base_optimizer": {"learning_rate": 0.4},
                                   "inner_loss_reduction": "mean", "adapt_layers": "all",
                                   "per_step_bn_weights": False, "adapt_bn": True, "n_way": 4, "n_way_test": 0,
                                   "test_queries_one_at_a_time": False},
              "data": {"image_shape": [1, 16, 16]}}
    net = perturbed_net("stride")
    episodes = [(rng.rand(4, 1, 16, 16), np.arange(4), rng.rand(8, 1, 16, 16), np.repeat(np.arange(4), 2))
                for _ in range(3)]
    model = DygraphModel()

    def accuracies(batch):
        metrics, _ = model.create_metrics(config, "infer")
        model.infer_forward(net, metrics, batch, config)
        return np.stack([m.values() for m in metrics])

    together = accuracies(episodes)
    alone = np.concatenate([accuracies([e]) for e in episodes], axis=1)
    np.testing.assert_array_equal(together, alone)
    assert together.shape == (3, 3)  # steps 0, 1, 2 x three episodes


def test_inner_loop_modes_agree_with_per_step_batch_norm_weights_left_out():
    """Second order, first order and evaluation (track=False) give the same fast
    weights; with per-step batch-norm weights that the inner loop leaves alone
    (MAML++), Paddle's partial gradient once crashed in the last two."""
    net = perturbed_net("stride", bn_steps=2)
    rng = np.random.RandomState(4)
    x = paddle.to_tensor(rng.rand(2, 4, 1, 16, 16))
    y = paddle.to_tensor(np.tile(np.arange(4), (2, 1)))
    adapted = [name for name in net.param_names if not name.startswith("bn")]
    loops = {"second": InnerLoop(0.1, adapted=adapted), "first": InnerLoop(0.1, first_order=True, adapted=adapted),
             "none": InnerLoop(0.1, adapted=adapted, track=False)}
    fast = {mode: adapt_to_support(net, loop, x, y, 3, loop.task_copies(net.weights(), 2))
            for mode, loop in loops.items()}
    for mode in ("first", "none"):
        for name in net.param_names:
            np.testing.assert_allclose(fast[mode][name].numpy(), fast["second"][name].numpy(), rtol=1e-9, atol=1e-12)


def test_inner_loop_update_rule_and_learned_rates_are_data():
    """The update rule is replaceable and learned per-step rates are a dict of
    tensors: one step equals the rule applied by hand to the gradient."""
    net = perturbed_net("stride", n_way=3)
    rng = np.random.RandomState(5)
    x = paddle.to_tensor(rng.rand(1, 3, 1, 16, 16))
    y = paddle.to_tensor(np.arange(3)[None])
    rates = {name: paddle.to_tensor([0.05 * (i + 1), 9.0]) for i, name in enumerate(net.param_names)}

    def sign_sgd(weight, grad, rate):
        return weight - rate * paddle.sign(grad)

    loop = InnerLoop(rates, update_rule=sign_sgd, adapted=["fc.weight", "conv1.weight"])
    start = loop.task_copies(net.weights(), 1)
    fast = adapt_to_support(net, loop, x, y, 1, start)
    grads = paddle.grad(cross_entropy(net.forward_tasks(x, start)[0], y[0]),
                        [start["fc.weight"], start["conv1.weight"]])
    for name, grad in zip(["fc.weight", "conv1.weight"], grads):
        i = net.param_names.index(name)
        expected = start[name].numpy() - 0.05 * (i + 1) * np.sign(grad.numpy())
        np.testing.assert_allclose(fast[name].numpy(), expected, rtol=1e-12)
    np.testing.assert_array_equal(fast["fc.bias"].numpy(), start["fc.bias"].numpy())  # not adapted


def test_offset_only_batch_norm_with_the_authors_epsilon_matches_plain_layers():
    """bn_scale=False, bn_epsilon=1e-3 against F.batch_norm with a unit scale and that epsilon."""
    paddle.seed(7)
    net = MAMLConvNet(n_way=4, hidden_channels=5, downsample="stride", bn_scale=False, bn_epsilon=1e-3)
    rng = np.random.RandomState(7)
    for p in list(net.weights().values()):
        p.set_value(p.numpy() + 0.2 * rng.randn(*p.shape))
    x = paddle.to_tensor(rng.rand(6, 1, 28, 28))
    weights = net.weights()
    h = x
    for i in range(4):
        h = F.conv2d(h, weights[f"conv{i}.weight"], weights[f"conv{i}.bias"], stride=2, padding="SAME")
        c = h.shape[1]
        h = F.relu(F.batch_norm(h, paddle.zeros([c]), paddle.ones([c]), paddle.ones([c]), weights[f"bn{i}.bias"],
                                training=True, epsilon=1e-3))
    expected = F.linear(h.mean(axis=[2, 3]), weights["fc.weight"], weights["fc.bias"]).numpy()
    for twice_differentiable in (True, False):
        np.testing.assert_allclose(net(x, twice_differentiable=twice_differentiable).numpy(), expected,
                                   rtol=1e-9, atol=1e-9)
