"""Prototypical Networks, Classifier-Baseline and Meta-Baseline: centroids,
Euclidean and cosine logits and the temperature's gradient against independent
numpy computations; running batch-norm statistics; the Classifier-Baseline
checkpoint loading into the meta stage; ResNet-12's shapes."""
import numpy as np
import paddle
import paddle.nn.functional as F
import pytest

from conftest import load_model_config  # noqa: F401  (paths)
from models.common.backbones import Conv4Features
from models.common.metric import centroids, cosine_logits, squared_euclidean_logits
from models.common.resnet12 import ResNet12
from models.lib import checkpoint


@pytest.fixture(autouse=True)
def float64():
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype("float32")


def numpy_centroids(features, labels, n_way):
    return np.stack([[f[l == c].mean(axis=0) for c in range(n_way)] for f, l in zip(features, labels)])


def test_centroids_and_logits_match_numpy():
    rng = np.random.RandomState(0)
    support, labels = rng.randn(2, 6, 4), np.array([[0, 1, 2, 0, 1, 2], [2, 2, 0, 1, 0, 1]])
    query = rng.randn(2, 5, 4)
    centres = numpy_centroids(support, labels, 3)
    got = centroids(paddle.to_tensor(support), paddle.to_tensor(labels), 3).numpy()
    np.testing.assert_allclose(got, centres, rtol=1e-12)
    euclid = -((query[:, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)
    np.testing.assert_allclose(squared_euclidean_logits(paddle.to_tensor(query), paddle.to_tensor(centres)).numpy(),
                               euclid, rtol=1e-12)
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    cosine = np.einsum("tqf,tnf->tqn", unit(query), unit(centres))
    np.testing.assert_allclose(cosine_logits(paddle.to_tensor(query), paddle.to_tensor(centres), 7.0).numpy(),
                               7.0 * cosine, rtol=1e-12)


def test_temperature_gradient_matches_numpy():
    """d/dtau of the mean cross-entropy of tau * cos: mean over queries of
    sum_n (softmax_n - onehot_n) * cos_n."""
    rng = np.random.RandomState(1)
    query, centres, labels = rng.randn(1, 8, 5), rng.randn(1, 4, 5), rng.randint(4, size=(1, 8))
    tau = paddle.to_tensor([3.0], stop_gradient=False)
    logits = cosine_logits(paddle.to_tensor(query), paddle.to_tensor(centres), tau)
    F.cross_entropy(logits.reshape([-1, 4]), paddle.to_tensor(labels.reshape(-1))).backward()
    unit = lambda a: a / np.linalg.norm(a, axis=-1, keepdims=True)  # noqa: E731
    cos = (unit(query[0]) @ unit(centres[0]).T)
    p = np.exp(3.0 * cos) / np.exp(3.0 * cos).sum(-1, keepdims=True)
    expected = ((p - np.eye(4)[labels[0]]) * cos).sum(-1).mean()
    np.testing.assert_allclose(tau.grad.numpy(), [expected], rtol=1e-10)


def test_protonet_loss_is_the_cross_entropy_of_negative_squared_distances():
    config, model_def = load_model_config(path=_config("protonet"), overrides=["hyper_parameters.bn_channel=4"])
    model = model_def.create_model(config)
    rng = np.random.RandomState(2)
    episode = (rng.rand(3, 1, 28, 28), np.arange(3), rng.rand(6, 1, 28, 28), np.repeat(np.arange(3), 2))
    config["hyper_parameters"]["n_way"] = 3
    metrics, _ = model_def.create_metrics(config)
    loss, _, _ = model_def.train_forward(model, metrics, [episode], config)
    # the features of all nine images in one batch, as train_forward computes them
    features = model.encoder.features(paddle.to_tensor(np.concatenate([episode[0], episode[2]]))).numpy()
    centres, query = features[:3], features[3:]
    logits = -((query[:, None] - centres[None]) ** 2).sum(-1)
    log_p = logits - np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1, keepdims=True)) - logits.max(1, keepdims=True)
    np.testing.assert_allclose(float(loss), -log_p[np.arange(6), episode[3]].mean(), rtol=1e-9)


def test_running_statistics_in_eval_mode_make_features_independent_of_the_batch():
    net = Conv4Features(1, 4, "maxpool")
    rng = np.random.RandomState(3)
    a, b = paddle.to_tensor(rng.rand(3, 1, 28, 28)), paddle.to_tensor(rng.rand(5, 1, 28, 28))
    net.train()
    net.features(paddle.concat([a, b]))  # updates the running statistics
    assert np.abs(net.bn0_running_mean.numpy()).max() > 0
    net.eval()
    alone, together = net.features(a).numpy(), net.features(paddle.concat([a, b]))[:3].numpy()
    np.testing.assert_allclose(alone, together, rtol=1e-10)
    net.train()
    assert np.abs(net.features(a).numpy() - net.features(paddle.concat([a, b]))[:3].numpy()).max() > 1e-3


def _config(model):
    import os

    from conftest import ROOT

    return os.path.join(ROOT, "models", "multitask", model, "config.yaml")


def test_classifier_baseline_checkpoint_loads_into_the_meta_stage(tmp_path):
    classifier_config, classifier_def = load_model_config(overrides=["hyper_parameters.bn_channel=4"], path=_config("classifier_baseline"))
    classifier = classifier_def.create_model(classifier_config)
    classifier.train()
    classifier.encoder.features(paddle.to_tensor(np.random.RandomState(4).rand(6, 1, 28, 28)))  # BN statistics
    checkpoint.save(str(tmp_path), 0, classifier, None, {}, classifier_def.network_description(classifier_config))
    meta_config, meta_def = load_model_config(path=_config("meta_baseline"), overrides=[
        "hyper_parameters.bn_channel=4", f"hyper_parameters.pretrained_encoder_path={tmp_path}"])
    meta = meta_def.create_model(meta_config)
    meta_def.init_weights(meta, meta_config)
    for name, value in classifier.encoder.state_dict().items():
        np.testing.assert_array_equal(meta.encoder.state_dict()[name].numpy(), value.numpy())
    assert meta.temperature.numpy().tolist() == [10.0]
    wider, wider_def = load_model_config(path=_config("meta_baseline"), overrides=[
        "hyper_parameters.bn_channel=8", f"hyper_parameters.pretrained_encoder_path={tmp_path}"])
    with pytest.raises(ValueError, match="holds the encoder .*'bn_channel': 4"):
        wider_def.init_weights(wider_def.create_model(wider), wider)
    empty, empty_def = load_model_config(path=_config("meta_baseline"), overrides=[
        f"hyper_parameters.pretrained_encoder_path={tmp_path / 'nothing'}"])
    with pytest.raises(ValueError, match="no Classifier-Baseline checkpoint in"):
        empty_def.init_weights(empty_def.create_model(empty), empty)


def test_resnet12_features_and_downsampling():
    paddle.set_default_dtype("float32")
    net = ResNet12(3, (4, 8, 8, 16))
    features = net.features(paddle.to_tensor(np.random.RandomState(5).rand(2, 3, 84, 84).astype("float32")))
    assert features.shape == [2, 16] and net.feature_size == 16
    assert net.blocks[0].conv1.weight.shape == [4, 3, 3, 3] and net.blocks[0].shortcut[0].weight.shape == [4, 3, 1, 1]


def test_labelled_images_visit_every_image_per_pass_and_resume_mid_pass():
    import itertools

    from models.common.images import LabelledImages

    classes = [np.full((3, 4, 4), c, dtype=np.uint8) + np.arange(3, dtype=np.uint8)[:, None, None] * 50
               for c in range(5)]
    data = LabelledImages(classes, seed=3)
    stream = iter(data)
    first_pass = [(int(label), int(round(image[0, 0, 0] * 255)) // 50) for image, label in itertools.islice(stream, 15)]
    assert sorted(first_pass) == [(c, i) for c in range(5) for i in range(3)]  # every image once
    list(itertools.islice(stream, 7))  # into the second pass
    state = data.get_state()
    rest = [int(label) for _, label in itertools.islice(stream, 12)]
    resumed = LabelledImages(classes, seed=99)
    resumed.set_state(state)
    assert [int(label) for _, label in itertools.islice(iter(resumed), 12)] == rest
