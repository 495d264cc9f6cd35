"""Matching Networks: the loss's gradient through the full context embeddings (both
LSTMs) and the encoder against central differences (float64), and the
classifier's meaning without them (attention over the support by cosine, summed
per label)."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from conftest import directional_errors
from models.multitask.matching_net.net import MatchingNet


@pytest.fixture(autouse=True)
def float64():
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype("float32")


def make_net(fce, seed, similarity="cosine"):
    paddle.seed(seed)
    config = {"hyper_parameters": {"backbone": "conv4", "bn_channel": 6, "downsample": "maxpool", "fce": fce,
                                   "fce_steps": 3, "similarity": similarity},
              "data": {"image_shape": [1, 16, 16]}}
    return MatchingNet(config)


def features(rng, n_way=3, shots=2, queries=2, size=6):
    support = paddle.to_tensor(rng.randn(2, n_way * shots, size))
    query = paddle.to_tensor(rng.randn(2, n_way * queries, size))
    ys = paddle.to_tensor(np.tile(np.repeat(np.arange(n_way), shots), (2, 1)))
    yq = paddle.to_tensor(np.tile(np.repeat(np.arange(n_way), queries), (2, 1)))
    return support, ys, query, yq


def nll(net, support, ys, query, yq):
    log_p = net.log_probabilities(support, ys, query, 3)
    return F.nll_loss(log_p.reshape([-1, 3]), yq.reshape([-1]))


@pytest.mark.parametrize("part", ["fce.forward_cell", "fce.backward_cell", "fce.attention_cell", "inputs"])
def test_full_context_embeddings_gradient_matches_central_differences(part):
    net = make_net(True, seed=101)
    support, ys, query, yq = features(np.random.RandomState(102))
    if part == "inputs":  # through both LSTMs into the encoder's features
        support.stop_gradient = query.stop_gradient = False
        params = [support, query]
    else:
        module = net
        for name in part.split("."):
            module = getattr(module, name)
        params = list(module.parameters())
    loss = nll(net, support, ys, query, yq)
    analytic = [g.numpy() for g in paddle.grad(loss, params)]

    def value():
        with paddle.no_grad():
            return float(nll(net, support, ys, query, yq))

    errors, derivatives = directional_errors(params, value, analytic, np.random.RandomState(103), eps=1e-5)
    assert max(errors) < 1e-8, (part, errors)
    assert min(abs(d) for d in derivatives) > 1e-6


@pytest.mark.parametrize("similarity", ["cosine", "support_normalized"])
def test_without_fce_a_query_gets_the_attention_summed_per_label(similarity):
    net = make_net(False, seed=111, similarity=similarity)
    support, ys, query, _ = features(np.random.RandomState(112))
    log_p = net.log_probabilities(support, ys, query, 3).numpy()
    s, q, labels = support.numpy(), query.numpy(), ys.numpy()
    for t in range(2):
        for j in range(q.shape[1]):
            dot = s[t] @ q[t, j] / np.linalg.norm(s[t], axis=1)
            similarities = dot / np.linalg.norm(q[t, j]) if similarity == "cosine" else dot
            attention = np.exp(similarities) / np.exp(similarities).sum()
            expected = np.log([attention[labels[t] == c].sum() for c in range(3)])
            np.testing.assert_allclose(log_p[t, j], expected, rtol=1e-12)


def test_a_sharp_attention_stays_finite():
    """A query of large norm (support_normalized) makes some attention weights
    underflow to 0; their classes' log-probabilities stay finite and the loss's
    gradient too."""
    net = make_net(False, seed=131, similarity="support_normalized")
    support, ys, query, yq = features(np.random.RandomState(132))
    query = query * 1e3
    query.stop_gradient = False
    log_p = net.log_probabilities(support, ys, query, 3)
    assert np.isfinite(log_p.numpy()).all() and log_p.numpy().min() < -100
    (grad,) = paddle.grad(F.nll_loss(log_p.reshape([-1, 3]), yq.reshape([-1])), [query])
    assert np.isfinite(grad.numpy()).all()


def test_fce_makes_each_support_embedding_depend_on_the_whole_support_set():
    """g(x_i, S) changes when another support image changes (without FCE it does not)."""
    net = make_net(True, seed=121)
    support, ys, query, _ = features(np.random.RandomState(122))
    before = net.fce.support(support).numpy()
    changed = support.numpy().copy()
    changed[:, -1] += 1.0
    after = net.fce.support(paddle.to_tensor(changed)).numpy()
    assert np.abs(after[:, 0] - before[:, 0]).max() > 1e-3
