"""LEO (models/multitask/leo): the meta-gradient through the latent inner loop and
the fine-tuning steps against an independent float64 computation, reproducible
sampling, gradient clipping as the authors'. The readers and data: test_leo_data.py."""
import numpy as np
import paddle
import pytest

import leo_reference as reference
from models.multitask.leo import net as leo_net
from models.multitask.leo.dygraph_model import ClipByValueThenNorm, DygraphModel

N_WAY, K_SPT, K_QUERY, D, LATENTS, TASKS = 3, 2, 2, 5, 3, 2
HP = {"num_latents": LATENTS, "inner_unroll_length": 2, "finetuning_unroll_length": 2, "dropout_rate": 0.3,
      "kl_weight": 0.7, "encoder_penalty_weight": 0.4, "l2_penalty_weight": 0.05,
      "orthogonality_penalty_weight": 0.2, "inner_lr_init": 0.8, "finetuning_lr_init": 0.3,
      "meta_optimizer": {"learning_rate": 1e-3, "gradient_threshold": 0.1, "gradient_norm_threshold": 0.1}}
NAMES = {"encoder": "encoder", "relation.0": "relation0", "relation.1": "relation1", "relation.2": "relation2",
         "decoder": "decoder", "inner_lr": "inner_lr", "finetuning_lr": "finetuning_lr"}


@pytest.fixture(autouse=True)
def float64():
    paddle.set_default_dtype("float64")
    yield
    paddle.set_default_dtype("float32")


def make_net(seed=0):
    """A small LEO network whose latent stds stay off their floor (raw halves positive)."""
    paddle.seed(seed)
    model = leo_net.LEONet(D, LATENTS, HP["inner_lr_init"], HP["finetuning_lr_init"])
    rng = np.random.RandomState(seed + 1)
    w2 = model.relation[2].numpy()
    w2[:, LATENTS:] = np.abs(w2[:, LATENTS:]) * 0.3  # after ReLUs: raw > 0, std = exp(raw) - 1 > 0
    model.relation[2].set_value(w2)
    model.inner_lr.set_value(model.inner_lr.numpy() + 0.1 * rng.randn(LATENTS))
    model.finetuning_lr.set_value(model.finetuning_lr.numpy() + 0.1 * rng.randn(D))
    return model


def make_tasks(rng):
    tasks = []
    for _ in range(TASKS):
        tasks.append((rng.randn(N_WAY * K_SPT, D), np.repeat(np.arange(N_WAY), K_SPT),
                      rng.randn(N_WAY * K_QUERY, D), np.repeat(np.arange(N_WAY), K_QUERY)))
    return tasks


def make_noise(rng):
    """Per-task NumPy noise for the reference and the same stacked for Paddle."""
    steps, ft = HP["inner_unroll_length"], HP["finetuning_unroll_length"]
    keep = 1 - HP["dropout_rate"]

    def mask(*shape):
        return (rng.rand(*shape) < keep) / keep

    per_task = [{"latents": rng.randn(N_WAY, K_SPT, LATENTS),
                 "weights": [rng.randn(N_WAY, K_SPT, D) for _ in range(steps + 1)],
                 "encoder_mask": mask(N_WAY * K_SPT, D),
                 "support_masks": [mask(N_WAY * K_SPT, D) for _ in range(steps + ft)],
                 "query_mask": mask(N_WAY * K_QUERY, D)} for _ in range(TASKS)]

    def stack(get):
        return paddle.to_tensor(np.stack([get(n) for n in per_task]))

    stacked = {"latents": stack(lambda n: n["latents"]),
               "weights": [stack(lambda n, i=i: n["weights"][i]) for i in range(steps + 1)],
               "encoder_mask": stack(lambda n: n["encoder_mask"]),
               "support_masks": [stack(lambda n, i=i: n["support_masks"][i]) for i in range(steps + ft)],
               "query_mask": stack(lambda n: n["query_mask"])}
    return per_task, stacked


def config():
    return {"hyper_parameters": dict(HP, n_way=N_WAY, n_way_test=N_WAY), "data": {"feature_size": D}}


def feeds_of(tasks):
    columns = list(zip(*tasks))
    return [paddle.to_tensor(np.stack(c)) for c in columns]


def paddle_meta_gradient(model, tasks, noise):
    model.clear_gradients()
    loss, _ = DygraphModel().meta_loss(model, feeds_of(tasks), config(), noise)
    loss.backward()
    return float(loss), {NAMES[n]: p.grad.numpy().copy() for n, p in model.named_parameters()}


def test_meta_gradient_matches_central_differences_of_an_independent_computation():
    model = make_net(3)
    rng = np.random.RandomState(4)
    tasks = make_tasks(rng)
    per_task, stacked = make_noise(rng)
    loss, ours = paddle_meta_gradient(model, tasks, stacked)
    point = {NAMES[n]: p.numpy().astype("float64") for n, p in model.named_parameters()}
    value, z_finals = reference.meta_objective(point, tasks, per_task, HP, N_WAY)
    assert abs(value - loss) < 1e-10 * max(1.0, abs(value))

    def objective(p):  # the encoder penalty's target held fixed: stop_gradient
        return reference.meta_objective(p, tasks, per_task, HP, N_WAY, z_finals)[0]

    eps = 1e-6
    for name, grad in ours.items():
        fd = np.zeros_like(grad)
        for index in np.ndindex(*grad.shape):
            plus, minus = dict(point), dict(point)
            plus[name], minus[name] = point[name].copy(), point[name].copy()
            plus[name][index] += eps
            minus[name][index] -= eps
            fd[index] = (objective(plus) - objective(minus)) / (2 * eps)
        error = np.abs(fd - grad).max() / max(np.abs(fd).max(), 1e-3)
        assert error < 1e-6, f"{name}: relative error {error:.2e}"
    # the second-order terms matter: without create_graph the gradient is another one
    assert np.abs(ours["decoder"]).max() > 0 and np.abs(ours["inner_lr"]).max() > 0


def test_latent_inner_loop_changes_the_prediction_and_evaluation_needs_no_graph():
    model = make_net(5)
    tasks = make_tasks(np.random.RandomState(6))
    latent_logits, logits, kl, penalty = leo_net_forward(model, tasks)
    assert latent_logits.shape == [TASKS, N_WAY * K_QUERY, N_WAY] and logits.shape == latent_logits.shape
    assert np.abs(latent_logits.numpy() - logits.numpy()).max() > 1e-6  # fine-tuning moved the weights
    assert logits.stop_gradient and float(kl.abs().sum()) == 0 and float(penalty.abs().sum()) == 0


def leo_net_forward(model, tasks):
    from models.multitask.leo.dygraph_model import leo_episodes

    return leo_episodes(model, feeds_of(tasks), HP, N_WAY)


def test_sampling_is_reproducible_from_the_seed_and_saved_in_checkpoints():
    tasks = make_tasks(np.random.RandomState(7))
    batch = [tuple(a for a in t) for t in tasks]

    def loss_of(seed, state=None):
        model_def = DygraphModel()
        cfg = dict(config(), runner={"seed": seed})
        paddle.seed(0)
        model = model_def.create_model(cfg)
        if state is not None:
            model_def.set_state(state)
        metrics, _ = model_def.create_metrics(cfg)
        return float(model_def.train_forward(model, metrics, batch, cfg)[0]), model_def

    first, model_def = loss_of(2017)
    again, _ = loss_of(2017)
    other, _ = loss_of(2018)
    assert first == again and first != other
    state = model_def.get_state()  # after one draw: the next draw continues the stream
    resumed, _ = loss_of(1, state)
    next_draw = float(model_def.train_forward(make_net_like(model_def, 2017), model_def.create_metrics(
        dict(config(), runner={"seed": 2017}))[0], batch, dict(config(), runner={"seed": 2017}))[0])
    assert resumed == next_draw


def make_net_like(model_def, seed):
    paddle.seed(0)
    rng = model_def.rng
    model = model_def.create_model(dict(config(), runner={"seed": seed}))
    model_def.rng = rng  # create_model reseeds; keep the stream that is being continued
    return model


def test_gradient_clipping_is_by_value_then_by_norm_per_tensor():
    p = paddle.create_parameter([3], "float64")
    q = paddle.create_parameter([2], "float64")
    grads = [(p, paddle.to_tensor([0.5, -0.05, 0.02])), (q, paddle.to_tensor([0.01, 0.02]))]
    clipped = ClipByValueThenNorm(0.1, 0.1)._dygraph_clip(grads)
    first = np.array([0.1, -0.05, 0.02])
    np.testing.assert_allclose(clipped[0][1].numpy(), first * 0.1 / np.linalg.norm(first), rtol=1e-12)
    np.testing.assert_allclose(clipped[1][1].numpy(), [0.01, 0.02], rtol=1e-12)  # under both limits


def test_a_non_finite_gradient_is_replaced_by_the_authors_guard_and_training_goes_on(tmp_path):
    """The authors' grads_and_vars: an overflowing step (here features so large that
    exp overflows in the decoder) updates with the gradient of 1e-4 * sum ||W||^2 / 2."""
    from tools.trainer import train_step

    model = make_net(11)
    model_def = DygraphModel()
    tasks = make_tasks(np.random.RandomState(12))
    huge = [(xs * 1e30, ys, xq, yq) for xs, ys, xq, yq in tasks]
    cfg = dict(config(), runner={"seed": 1})
    optimizer = model_def.create_optimizer(model, cfg)
    before = {n: p.numpy().copy() for n, p in model.named_parameters()}
    seen = {}
    original = model_def.replace_nonfinite_gradients

    def spy(net, c):
        handled = original(net, c)
        seen.update({n: p.grad.numpy().copy() for n, p in net.named_parameters()})
        return handled

    model_def.replace_nonfinite_gradients = spy
    loss = train_step(model_def, model, optimizer, model_def.create_metrics(cfg)[0], huge, cfg, "the test",
                      str(tmp_path))
    assert not np.isfinite(loss)
    np.testing.assert_allclose(seen["decoder"], 1e-4 * before["decoder"], rtol=1e-12)
    assert not seen["inner_lr"].any() and not seen["finetuning_lr"].any()
    assert not np.array_equal(model.decoder.numpy(), before["decoder"])  # the update happened
    assert np.array_equal(model.inner_lr.numpy(), before["inner_lr"])


def test_training_without_dropout():
    """dropout_rate 0: no masks drawn, the same step otherwise."""
    model_def = DygraphModel()
    hp = dict(config()["hyper_parameters"], dropout_rate=0.0)
    cfg = {"hyper_parameters": hp, "data": config()["data"], "runner": {"seed": 3}}
    model = model_def.create_model(cfg)
    loss, _, _ = model_def.train_forward(model, model_def.create_metrics(cfg)[0], make_tasks(np.random.RandomState(13)), cfg)
    loss.backward()
    assert np.isfinite(float(loss)) and np.abs(model.encoder.grad.numpy()).max() > 0
