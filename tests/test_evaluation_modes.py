"""hyper_parameters.test_queries_one_at_a_time: the Reptile paper's non-transductive
test, where each query image is classified with the support set alone, against an
independent computation with Paddle's own layers; and the transductive default."""
import numpy as np
import paddle
import pytest

from models.multitask.maml.dygraph_model import query_logits
from test_net import perturbed_net, plain_forward


@pytest.fixture(autouse=True)
def float64():
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype("float32")


def episode_batch(rng, tasks=2, support=4, queries=6):
    return (paddle.to_tensor(rng.rand(tasks, support, 1, 16, 16)),
            paddle.to_tensor(rng.rand(tasks, queries, 1, 16, 16)))


def per_task_weights(net, tasks, rng):
    """Different fast weights per task, [T, ...] each, as after adaptation."""
    return {name: paddle.to_tensor(np.stack([w.numpy() + 0.1 * rng.randn(*w.shape) for _ in range(tasks)]))
            for name, w in net.weights().items()}


@pytest.mark.parametrize("downsample", ["stride", "maxpool"])
def test_each_query_alone_is_the_support_set_plus_that_image(downsample):
    rng = np.random.RandomState(3)
    net = perturbed_net(downsample)
    xs, xq = episode_batch(rng)
    fast = per_task_weights(net, 2, rng)
    got = query_logits(net, fast, xq, 0, xs=xs).numpy()
    for t in range(2):
        params = [fast[name][t] for name in net.param_names]
        for j in range(xq.shape[1]):  # batch norm over the 4 support images and query j only
            images = paddle.concat([xs[t], xq[t, j: j + 1]])
            expected = plain_forward(params, images, downsample).numpy()[-1]
            np.testing.assert_allclose(got[t, j], expected, rtol=1e-9, atol=1e-9)


def test_no_query_sees_another_unless_transductive():
    rng = np.random.RandomState(4)
    net = perturbed_net("stride")
    xs, xq = episode_batch(rng)
    fast = per_task_weights(net, 2, rng)
    changed = xq.numpy().copy()
    changed[:, 1:] = rng.rand(*changed[:, 1:].shape)  # every query image but the first replaced
    changed = paddle.to_tensor(changed)
    alone = [query_logits(net, fast, q, 0, xs=xs).numpy()[:, 0] for q in (xq, changed)]
    np.testing.assert_array_equal(alone[0], alone[1])
    together = [query_logits(net, fast, q, 0).numpy()[:, 0] for q in (xq, changed)]
    assert np.abs(together[0] - together[1]).max() > 1e-3  # transductive: the batch statistics moved


def test_the_switch_reaches_maml_and_reptile_evaluation():
    from conftest import load_model_config

    rng = np.random.RandomState(5)
    episodes = [(rng.rand(3, 1, 28, 28), np.arange(3), rng.rand(6, 1, 28, 28), np.repeat(np.arange(3), 2))
                for _ in range(2)]
    for config_path in ("models/multitask/maml/config.yaml", "models/multitask/reptile/config.yaml"):
        accuracies = []
        for alone in (False, True):
            config, model_def = load_model_config(
                ["hyper_parameters.bn_channel=4", "hyper_parameters.n_way=3", "hyper_parameters.update_step_test=1",
                 f"hyper_parameters.test_queries_one_at_a_time={alone}"], path=config_path)
            paddle.seed(0)
            model = model_def.create_model(config)
            metrics, _ = model_def.create_metrics(config, "infer")
            model_def.infer_forward(model, metrics, episodes, config)
            accuracies.append([m.accumulate() for m in metrics])
        assert accuracies[0] != accuracies[1], config_path  # the two tests classify differently here
