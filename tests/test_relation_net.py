"""Relation Networks: the gradient of the MSE loss through the relation module and
the embedding (float64) against central differences in random directions, and
the scores' meaning (one per (query, class) pair, a class map the sum of its shots)."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from conftest import directional_errors
from models.multitask.relation_net.net import RelationNet


@pytest.fixture(autouse=True)
def float64():
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype("float32")


def episode(rng, n_way=3, shots=2, queries=2, size=28):
    xs = paddle.to_tensor(rng.rand(1, n_way * shots, 1, size, size))
    ys = paddle.to_tensor(np.repeat(np.arange(n_way), shots)[None])
    xq = paddle.to_tensor(rng.rand(1, n_way * queries, 1, size, size))
    yq = paddle.to_tensor(np.repeat(np.arange(n_way), queries)[None])
    return xs, ys, xq, yq


def loss_of(net, xs, ys, xq, yq, n_way=3):
    scores = net.scores(xs, ys, xq, n_way)
    return F.mse_loss(scores, F.one_hot(yq, n_way).astype(scores.dtype))


@pytest.mark.parametrize("module", ["relation", "embedding"])
def test_gradient_matches_central_differences(module):
    paddle.seed(81)
    net = RelationNet(1, 28, channels=6, hidden=4)
    xs, ys, xq, yq = episode(np.random.RandomState(82))
    params = list(getattr(net, module).parameters())
    net.clear_gradients()
    loss_of(net, xs, ys, xq, yq).backward()
    analytic = [p.grad.numpy().copy() for p in params]

    def loss():
        with paddle.no_grad():
            return float(loss_of(net, xs, ys, xq, yq))

    errors, derivatives = directional_errors(params, loss, analytic, np.random.RandomState(83))
    assert max(errors) < 1e-8, (module, errors)
    assert min(abs(d) for d in derivatives) > 1e-6


def test_scores_pair_each_query_with_each_class_and_sum_the_shots():
    """Score [t, q, c] is the relation module on (sum of class c's support maps,
    query q's map), computed here pair by pair."""
    paddle.seed(91)
    net = RelationNet(1, 28, channels=6, hidden=4)
    xs, ys, xq, _ = episode(np.random.RandomState(92))
    with paddle.no_grad():
        scores = net.scores(xs, ys, xq, 3).numpy()[0]
        support, query = net.embed(xs[0]), net.embed(xq[0])
        classes = [support[2 * c] + support[2 * c + 1] for c in range(3)]
        pairs = paddle.stack([paddle.concat([classes[c], query[q]]) for q in range(6) for c in range(3)])
        expected = net.relation(pairs).numpy().reshape(6, 3)
    np.testing.assert_allclose(scores, expected, rtol=1e-12, atol=1e-14)
    assert ((scores > 0) & (scores < 1)).all()


def test_the_authors_initialisation():
    """weights_init of the authors' scripts: conv N(0, 2 / (9 x out)), zero conv biases,
    linear N(0, 0.01) with biases of 1."""
    paddle.seed(95)
    net = RelationNet(1, 28, init="authors")
    conv = net.embedding[1].conv
    assert abs(conv.weight.numpy().std() - np.sqrt(2.0 / (9 * 64))) < 0.002
    assert not conv.bias.numpy().any()
    assert abs(net.relation.fc1.weight.numpy().std() - 0.01) < 0.001
    assert (net.relation.fc1.bias.numpy() == 1).all() and (net.relation.fc2.bias.numpy() == 1).all()


def test_each_module_is_clipped_on_its_own_before_the_step():
    """grad_clip_norm: the embedding's and the relation module's gradients are each scaled
    to global norm 0.5 at most (the authors' clip_grad_norm per optimizer). Adam's first
    step does not see a uniform scale, the second step does: a huge first gradient then a
    tiny one moves the weights differently with and without the clipping."""
    from models.multitask.relation_net.dygraph_model import DygraphModel

    def after_two_steps(clip):
        paddle.seed(96)
        net = RelationNet(1, 28, channels=6, hidden=4)
        config = {"hyper_parameters": {"grad_clip_norm": clip, "optimizer": {
            "learning_rate": 0.01, "lr_decay_every": 100, "lr_decay_gamma": 0.5}}}
        optimizer = DygraphModel().create_optimizer(net, config)
        xs, ys, xq, yq = episode(np.random.RandomState(97))
        for scale in (1e4, 1e-4):
            (scale * loss_of(net, xs, ys, xq, yq)).backward()
            optimizer.step()
            optimizer.clear_grad()
        return net, optimizer

    clipped, optimizer = after_two_steps(0.5)
    groups = optimizer._param_groups
    assert [len(g["params"]) for g in groups] == [len(clipped.embedding.parameters()),
                                                  len(clipped.relation.parameters())]
    assert all(g["grad_clip"].clip_norm == 0.5 for g in groups)
    plain, _ = after_two_steps(0.0)
    for module in ("embedding", "relation"):
        pairs = zip(getattr(clipped, module).parameters(), getattr(plain, module).parameters())
        moved = [np.abs(a.numpy() - b.numpy()).max() for a, b in pairs]
        assert max(moved) > 1e-6, module


def test_queries_one_at_a_time_do_not_see_each_other():
    """test_queries_one_at_a_time: a query's scores are those of an episode holding that
    query only (its own embedding pass, its N pairs normalised among themselves), the same
    when the other queries are dropped or permuted; together, they are not."""
    paddle.seed(98)
    net = RelationNet(1, 28, channels=6, hidden=4)
    xs, ys, xq, _ = episode(np.random.RandomState(99))
    with paddle.no_grad():
        alone = net.scores(xs, ys, xq, 3, queries_alone=True).numpy()[0]
        together = net.scores(xs, ys, xq, 3).numpy()[0]
        for q in range(xq.shape[1]):
            single = net.scores(xs, ys, xq[:, q:q + 1], 3).numpy()[0, 0]
            np.testing.assert_allclose(alone[q], single, rtol=1e-10, atol=1e-12)
        order = [3, 0, 5, 1, 4, 2]
        permuted = net.scores(xs, ys, paddle.to_tensor(xq.numpy()[:, order]), 3, queries_alone=True).numpy()[0]
        np.testing.assert_allclose(permuted, alone[order], rtol=1e-10, atol=1e-12)
    assert np.abs(together - alone).max() > 1e-4
