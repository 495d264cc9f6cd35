"""Reptile (models/multitask/reptile): its meta-update against an independent
computation, its minibatch sampling, and its configs end to end."""
import os

import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from conftest import ROOT
from models.multitask.maml.net import MAMLConvNet
from models.common.layers import cross_entropy
from models.multitask.reptile import dygraph_model as reptile
from tools.utils import runtime

REPTILE_DIR = os.path.join(ROOT, "models", "multitask", "reptile")

ALPHA, STEPS, INNER_BATCH, EPSILON = 0.3, 3, 4, 0.7


@pytest.fixture(autouse=True)
def float64():
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype("float32")


def make_config(tasks):
    return {"runner": {"epochs": 1, "train_batches_per_epoch": 10},
            "data": {"image_shape": [1, 16, 16]},
            "hyper_parameters": {"n_way": 3, "n_way_test": 0, "test_queries_one_at_a_time": False,
                                 "update_step": STEPS, "inner_batch_size": INNER_BATCH,
                                 "base_optimizer": {"class": "SGD", "learning_rate": ALPHA},
                                 "meta_optimizer": {"learning_rate": EPSILON, "final_learning_rate": 0.0}}}


def make_batch(rng, tasks, n_way=3, k_spt=1, k_query=2, size=16):
    return [(rng.rand(n_way * k_spt, 1, size, size), np.arange(n_way).repeat(k_spt),
             rng.rand(n_way * k_query, 1, size, size), np.arange(n_way).repeat(k_query)) for _ in range(tasks)]


def reference_phi(net, theta, episode, batches):
    """SGD with the twice-differentiable primitives (not the fused kernels the
    project's inner loop uses), one plain step per minibatch."""
    params = theta
    for grads in minibatch_gradients(net, episode, batches, lambda: params):
        params = [p - ALPHA * g for p, g in zip(params, grads)]
    return params


def minibatch_gradients(net, episode, batches, current):
    """For each minibatch idx of BATCHES, the loss gradient on the episode's images
    x[idx] at the weights current() returns (through the primitives)."""
    xs, ys, xq, yq = episode
    x, y = np.concatenate([xs, xq]), np.concatenate([ys, yq])
    for idx in batches:
        pt = [paddle.to_tensor(p, stop_gradient=False) for p in current()]
        loss = cross_entropy(net(paddle.to_tensor(x[idx]), dict(zip(net.param_names, pt))), paddle.to_tensor(y[idx]))
        yield [g.numpy() for g in paddle.grad(loss, pt)]


@pytest.mark.parametrize("tasks", [1, 3])  # serial and batched Reptile
def test_reptile_update_is_epsilon_times_the_mean_displacement(tasks):
    paddle.seed(3)
    net = MAMLConvNet(n_way=3, hidden_channels=5, activation=F.tanh)
    rng = np.random.RandomState(4)
    for p in list(net.weights().values()):
        p.set_value(p.numpy() + 0.1 * rng.randn(*p.shape))
    theta = [p.numpy().copy() for p in list(net.weights().values())]
    batch = make_batch(rng, tasks)
    config = make_config(tasks)
    model_def = reptile.DygraphModel()
    optimizer = model_def.create_optimizer(net, config)
    metrics, _ = model_def.create_metrics(config)

    model_def.rng = np.random.RandomState(5)  # the model's own generator draws the inner minibatches
    loss, _, _ = model_def.train_forward(net, metrics, batch, config)
    loss.backward()
    optimizer.step()

    rng = np.random.RandomState(5)
    phis = [reference_phi(net, theta, episode, reptile.minibatch_indices(9, INNER_BATCH, STEPS, rng))
            for episode in batch]
    moved = 0.0
    for i, p in enumerate(list(net.weights().values())):
        mean_phi = np.mean([phi[i] for phi in phis], axis=0)
        expected = theta[i] + EPSILON * (mean_phi - theta[i])
        assert np.abs(p.numpy() - expected).max() < 1e-8, net.param_names[i]  # fused vs primitive kernels
        moved = max(moved, np.abs(mean_phi - theta[i]).max())
    assert moved > 1e-2  # the inner loop did move (conv biases cannot: batch norm cancels them)
    assert all(len(m.values()) == tasks for m in metrics)


def test_minibatches_run_through_shuffles_without_replacement():
    batches = reptile.minibatch_indices(10, 4, 5, np.random.RandomState(0))
    flat = np.concatenate(batches)
    assert [len(b) for b in batches] == [4] * 5
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:20]) == list(range(10))


def test_outer_step_size_anneals_linearly_to_its_final_value():
    net = MAMLConvNet(n_way=3, hidden_channels=5)
    model_def = reptile.DygraphModel()
    schedule = runtime.lr_scheduler_of(model_def.create_optimizer(net, make_config(1)))
    rates = []
    for _ in range(10):
        rates.append(schedule.get_lr())
        schedule.step()
    assert rates == pytest.approx([EPSILON * (1 - k / 10) for k in range(10)])


def test_reptile_owns_its_generator_and_checkpoints_it():
    """The inner minibatches come from the model's RandomState, seeded from
    runner.seed, untouched by NumPy's global generator, restored from get_state()."""
    config = dict(make_config(1), runner={"seed": 7, "epochs": 1, "train_batches_per_epoch": 10})
    config["hyper_parameters"].update(bn_channel=4, downsample="stride")
    model_def = reptile.DygraphModel()
    model_def.create_model(config)
    saved = model_def.get_state()
    np.random.seed(0)
    first = reptile.minibatch_indices(9, INNER_BATCH, STEPS, model_def.rng)
    np.random.seed(1)
    model_def.set_state(saved)
    again = reptile.minibatch_indices(9, INNER_BATCH, STEPS, model_def.rng)
    other = reptile.DygraphModel()
    other.create_model(dict(config, runner=dict(config["runner"], seed=8)))
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not all(np.array_equal(a, b) for a, b in zip(first, reptile.minibatch_indices(9, INNER_BATCH, STEPS, other.rng)))


def reference_adam(net, theta, episode, batches, v, t, lr=ALPHA, beta2=0.999, eps=1e-8):
    """TensorFlow's Adam with beta1 = 0 (the authors' inner optimizer) in numpy on
    the primitives' gradients; V and T (the running state) are updated in place."""
    params = theta
    for grads in minibatch_gradients(net, episode, batches, lambda: params):
        t[0] += 1
        for i, g in enumerate(grads):
            v[i] = beta2 * v[i] + (1 - beta2) * g * g
        params = [p - lr * np.sqrt(1 - beta2 ** t[0]) * g / (np.sqrt(vi) + eps)
                  for p, g, vi in zip(params, grads, v)]
    return params


def test_the_authors_inner_adam_runs_on_through_tasks_and_is_only_read_at_test():
    from models.multitask.reptile.inner_adam import AdamState

    paddle.seed(3)
    net = MAMLConvNet(n_way=3, hidden_channels=5, activation=F.tanh)
    net.inner_adam = AdamState(net.weights())
    rng = np.random.RandomState(4)
    for p in list(net.weights().values()):
        p.set_value(p.numpy() + 0.1 * rng.randn(*p.shape))
    theta = [p.numpy().copy() for p in list(net.weights().values())]
    batch = make_batch(rng, 3)
    config = make_config(3)
    config["hyper_parameters"]["base_optimizer"]["class"] = "Adam"
    model_def = reptile.DygraphModel()
    optimizer = model_def.create_optimizer(net, config)
    metrics, _ = model_def.create_metrics(config)
    model_def.rng = np.random.RandomState(5)
    loss, _, _ = model_def.train_forward(net, metrics, batch, config)
    loss.backward()
    optimizer.step()

    rng = np.random.RandomState(5)
    v, t = [np.zeros_like(p) for p in theta], [0]
    phis = [reference_adam(net, theta, episode, reptile.minibatch_indices(9, INNER_BATCH, STEPS, rng), v, t)
            for episode in batch]  # one state through the three tasks, in order
    for i, p in enumerate(list(net.weights().values())):
        expected = theta[i] + EPSILON * (np.mean([phi[i] for phi in phis], axis=0) - theta[i])
        assert np.abs(p.numpy() - expected).max() < 1e-8, net.param_names[i]
        assert np.abs(net.inner_adam.v(net.param_names[i]).numpy() - v[i]).max() < 1e-9  # fused vs primitive
    assert float(net.inner_adam.step) == t[0] == 3 * STEPS

    # At test every episode starts from the saved state, which stays as it was.
    saved_v = [net.inner_adam.v(n).numpy().copy() for n in net.param_names]
    theta = [p.numpy().copy() for p in list(net.weights().values())]
    episodes = make_batch(np.random.RandomState(6), 2)
    loop = reptile.inner_loop(net, config, training=False)
    adapted = reptile.inner_adapt(net, net.weights(), paddle.to_tensor(episodes[1][0]),
                                  paddle.to_tensor(episodes[1][1]), [np.arange(3)] * 2, loop)
    expected = reference_adam(net, theta, (episodes[1][0], episodes[1][1], episodes[1][0][:0], episodes[1][1][:0]),
                              [np.arange(3)] * 2, [x.copy() for x in saved_v], [t[0]])
    for i, name in enumerate(net.param_names):
        assert np.abs(adapted[name].numpy() - expected[i]).max() < 1e-8, name
        assert np.array_equal(net.inner_adam.v(name).numpy(), saved_v[i])
    assert float(net.inner_adam.step) == 3 * STEPS
    config["hyper_parameters"]["update_step_test"] = 2
    metrics, _ = model_def.create_metrics(config, "infer")
    model_def.infer_forward(net, metrics, episodes, config)
    assert float(net.inner_adam.step) == 3 * STEPS
    assert all(len(m.values()) == 2 for m in metrics)
