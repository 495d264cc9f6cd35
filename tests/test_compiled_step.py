"""benchmarks/compiled_step.py's claim: the MAML meta-step and evaluation compiled
with paddle.jit.to_static compute exactly what the eager code computes (Paddle 3.x,
PIR; the benchmark README's compiled-path measurements rest on it)."""
import numpy as np
import paddle
import pytest

from benchmarks import compiled_step
from benchmarks.bench_workers import SETTINGS, fake_episodes, load_maml

pytestmark = [pytest.mark.slow,  # builds programs: skipped by python -m pytest -m "not slow"
              pytest.mark.skipif(not paddle.__version__.startswith("3."), reason="to_static of the step needs PIR")]


@pytest.fixture(autouse=True)
def paddle_convolutions(monkeypatch):
    """As benchmarks/compiled_step.py: Paddle's conv2d (to_static of the custom operator is not supported)."""
    monkeypatch.setenv("FEWSHOT_CONV", "paddle")


def setting_and_feeds(order, tasks=4):
    s = dict(SETTINGS["5way1shot"], meta_batch=tasks)
    config, model_def = load_maml([f"hyper_parameters.first_order={order == 'first'}",
                                   "hyper_parameters.inner_loss_reduction=mean"], s["config"])
    paddle.seed(0)
    net = model_def.create_model(config)
    feeds = model_def.create_feeds(fake_episodes(s, np.random.RandomState(0)), config)
    return net, model_def, config, feeds


def outputs(layer, inputs, compiled):
    run = paddle.jit.to_static(layer, full_graph=True) if compiled else layer
    return [o.numpy() for o in run(*inputs)]


@pytest.mark.parametrize("order", ["second", "first"])
def test_compiled_meta_step_equals_eager(order):
    net, model_def, config, (xs, ys, xq, yq) = setting_and_feeds(order)
    layer = compiled_step.MetaStep(net, model_def, config, steps=2, first_order=order == "first")
    eager, compiled = outputs(layer, (xs, ys, xq, yq), False), outputs(layer, (xs, ys, xq, yq), True)
    assert len(eager) == 1 + len(net.weights())
    for e, c in zip(eager, compiled):
        np.testing.assert_allclose(c, e, rtol=1e-5, atol=1e-7)


def test_compiled_second_order_is_not_first_order():
    grads = {}
    for order in ("second", "first"):
        net, model_def, config, feeds = setting_and_feeds(order)
        layer = compiled_step.MetaStep(net, model_def, config, steps=2, first_order=order == "first")
        grads[order] = outputs(layer, feeds, True)[1:]
    assert max(np.abs(a - b).max() for a, b in zip(grads["second"], grads["first"])) > 1e-4


def test_compiled_evaluation_equals_eager():
    net, model_def, config, (xs, ys, xq, _) = setting_and_feeds("second")
    layer = compiled_step.Evaluation(net, model_def, config, steps=3)
    eager, compiled = outputs(layer, (xs, ys, xq), False), outputs(layer, (xs, ys, xq), True)
    assert len(eager) == 3 and not np.allclose(eager[0], eager[-1])  # the steps change the logits
    for e, c in zip(eager, compiled):
        np.testing.assert_allclose(c, e, rtol=1e-5, atol=1e-6)
