"""LEO, Latent Embedding Optimization (Rusu, Rao, Sygnowski, Vinyals, Pascanu,
Osindero, Hadsell, ICLR 2019), in PaddleRec's DygraphModel interface, as the
authors' model.py and runner.py (deepmind/leo) compute it.

Per task, on feature vectors (net.py):
    z  ~ q(z | support)                  encoder + relation network, per-class Gaussian
    z <- z - a (.) grad_z L_s(decode(z))   inner_unroll_length steps, a learned per latent dimension
    w  = decode(z)
    w <- w - b (.) grad_w L_s(w)         finetuning_unroll_length steps, b learned per feature dimension
    loss = CE_query(w) + kl_weight * KL(q(z) || N(0, I)) + encoder_penalty_weight * ||stop_grad(z_T) - z_0||^2
The meta-loss is its mean over the tasks plus l2_penalty_weight * sum ||W||^2 / 2 over the
encoder, relation and decoder weights and orthogonality_penalty_weight * the decoder's
orthogonality penalty. Both inner loops are MAML's InnerLoop (models/multitask/maml/dygraph_model.py) with
create_graph: the meta-gradient is the exact one. In training the latents and the
classifier weights are sampled and dropout is on (the random numbers come from the
model's own RandomState, seeded from runner.seed and saved in every checkpoint); in
evaluation the means are used and dropout is off. Config keys: HYPER_PARAMETER_OPTIONS.
"""
import itertools

import numpy as np
import paddle

from models.common.episodes import ways
from models.common.fewshot_model import FewShotModel
from models.common.layers import cross_entropy
from models.multitask.leo import net
from models.multitask.maml.dygraph_model import InnerLoop
from models.lib.config import Option, at_least, positive
from models.lib.metrics import EpisodeAccuracy, accuracy

HYPER_PARAMETER_OPTIONS = [
    Option("meta_optimizer.class", str, "Adam", "meta (outer) optimizer", choices=["Adam"]),
    Option("meta_optimizer.learning_rate", float, 1e-4, "outer learning rate (the authors' outer_lr)",
           (positive, "a number > 0")),
    Option("meta_optimizer.gradient_threshold", float, 0.1, "every element of every gradient clipped to "
           "[-t, t] first (0: off)", (at_least(0), "a number >= 0")),
    Option("meta_optimizer.gradient_norm_threshold", float, 0.1, "then every gradient tensor's norm clipped "
           "to this (0: off)", (at_least(0), "a number >= 0")),
    Option("num_latents", int, 64, "dimension of the latent space", (positive, "an integer >= 1")),
    Option("inner_unroll_length", int, 5, "adaptation steps in the latent space", (positive, "an integer >= 1")),
    Option("finetuning_unroll_length", int, 5, "adaptation steps on the decoded classifier weights",
           (at_least(0), "an integer >= 0")),
    Option("inner_lr_init", float, 1.0, "initial latent step size (learned, one per latent dimension)"),
    Option("finetuning_lr_init", float, 0.001, "initial fine-tuning step size (learned, one per feature "
           "dimension)"),
    Option("dropout_rate", float, 0.5, "dropout on the features in meta-training",
           (lambda v: 0 <= v < 1, "a number from 0 to below 1")),
    Option("kl_weight", float, 1e-3, "beta: weight of the latent KL term", (at_least(0), "a number >= 0")),
    Option("encoder_penalty_weight", float, 1e-9, "gamma: weight of the squared distance between stop_grad(z') and z",
           (at_least(0), "a number >= 0")),
    Option("l2_penalty_weight", float, 1e-8, "lambda_1: weight of the L2 penalty", (at_least(0), "a number >= 0")),
    Option("orthogonality_penalty_weight", float, 1e-3, "lambda_2: weight of the decoder orthogonality penalty",
           (at_least(0), "a number >= 0")),
]


class ClipByValueThenNorm(paddle.nn.clip.ClipGradBase):
    """The authors' _clip_gradients: each element to [-value, value], then each
    tensor to norm at most `norm` (tf.clip_by_norm), either off when 0."""

    def __init__(self, value, norm):
        super().__init__()
        self.value, self.norm = value, norm

    def _dygraph_clip(self, params_grads):
        clipped = []
        for param, grad in params_grads:
            if grad is not None:
                if self.value > 0:
                    grad = paddle.clip(grad, -self.value, self.value)
                if self.norm > 0:
                    grad = grad * (self.norm / paddle.maximum(grad.norm(), paddle.full([], self.norm, grad.dtype)))
            clipped.append((param, grad))
        return clipped


def draw_noise(rng, shapes, hp, dtype):
    """The random numbers of one training forward: latent and weight samples, dropout masks
    (kept with probability 1 - rate, scaled by 1 / (1 - rate)); None entries when no dropout."""
    tasks, n_way, k_spt, n_query, d = shapes
    rate, steps = hp["dropout_rate"], hp["inner_unroll_length"]

    def mask(*shape):
        if rate == 0:
            return None
        return paddle.to_tensor(((rng.random_sample(shape) >= rate) / (1 - rate)).astype(dtype))

    def normal(*shape):
        return paddle.to_tensor(rng.standard_normal(shape).astype(dtype))

    return {"latents": normal(tasks, n_way, k_spt, hp["num_latents"]),
            "weights": [normal(tasks, n_way, k_spt, d) for _ in range(steps + 1)],
            "encoder_mask": mask(tasks, n_way * k_spt, d),
            "support_masks": [mask(tasks, n_way * k_spt, d) for _ in range(steps + hp["finetuning_unroll_length"])],
            "query_mask": mask(tasks, n_query, d)}


def leo_episodes(model, feeds, hp, n_way, noise=None):
    """Adapt to every task's support set and predict its queries. NOISE (training):
    sampled latents and weights, dropout, the exact meta-gradient kept; None
    (evaluation): the means, no dropout, nothing kept for a meta-gradient.
    Returns (query logits after the latent loop (None in training), after fine-tuning,
    per-task KL, per-task encoder penalty)."""
    xs, ys, xq, _ = feeds
    training = noise is not None
    tasks = xs.shape[0]
    masks = iter(noise["support_masks"]) if training else itertools.repeat(None)
    weight_noise = iter(noise["weights"]) if training else itertools.repeat(None)

    distribution = model.latent_distribution(xs, noise["encoder_mask"] if training else None, n_way)
    start, mean, std = net.sample(distribution, noise["latents"] if training else None)
    if training:
        kl = net.kl_divergence(start, mean, std)
        fast = {"z": start}
    else:
        kl = paddle.zeros([tasks])
        fast = {"z": start.detach()}
        fast["z"].stop_gradient = False
    latent_loop = InnerLoop({"z": model.inner_lr.unsqueeze(0)}, track=training)
    weights = model.decode(fast["z"], next(weight_noise), n_way)
    loss = net.summed_loss(xs, next(masks), ys, weights, twice_differentiable=training)
    for step in range(1, hp["inner_unroll_length"] + 1):
        fast = latent_loop.adapt(loss.sum(), fast, step)
        weights = model.decode(fast["z"], next(weight_noise), n_way)
        loss = net.summed_loss(xs, next(masks), ys, weights, twice_differentiable=training)
    penalty = (((fast["z"].detach() - start) ** 2).reshape([tasks, -1]).mean(axis=-1) if training
               else paddle.zeros([tasks]))
    latent_logits = None  # the accuracy after the latent loop alone: evaluation reports it
    if not training:
        with paddle.no_grad():
            latent_logits = net.predict(xq, None, weights)

    finetuning = InnerLoop({"w": model.finetuning_lr.unsqueeze(0)}, track=training)
    fast_w = {"w": weights}
    steps = hp["finetuning_unroll_length"]
    for step in range(1, steps + 1):
        fast_w = finetuning.adapt(loss.sum(), fast_w, step)
        if step < steps:
            loss = net.summed_loss(xs, next(masks), ys, fast_w["w"], twice_differentiable=training)
    if training:
        return latent_logits, net.predict(xq, noise["query_mask"], fast_w["w"]), kl, penalty
    with paddle.no_grad():
        return latent_logits, net.predict(xq, None, fast_w["w"]), kl, penalty


class DygraphModel(FewShotModel):
    """PaddleRec's model interface (models/common/fewshot_model.py) for LEO."""

    def __init__(self):
        self.rng = np.random.RandomState(0)

    def get_state(self):
        return {"noise_rng": self.rng.get_state()}

    def set_state(self, state):
        self.rng.set_state(state["noise_rng"])

    def create_model(self, config):
        self.rng = np.random.RandomState([config["runner"]["seed"], 2])  # a stream apart from the sampler's
        hp = config["hyper_parameters"]
        return net.LEONet(config["data"]["feature_size"], hp["num_latents"], hp["inner_lr_init"],
                          hp["finetuning_lr_init"])

    def network_description(self, config):
        return {"model": "leo", "feature_size": config["data"]["feature_size"],
                "num_latents": config["hyper_parameters"]["num_latents"]}

    def create_optimizer(self, model, config):
        meta = config["hyper_parameters"]["meta_optimizer"]
        clip = ClipByValueThenNorm(meta["gradient_threshold"], meta["gradient_norm_threshold"])
        return paddle.optimizer.Adam(learning_rate=meta["learning_rate"], parameters=model.parameters(),
                                     grad_clip=clip)

    def create_metrics(self, config, mode="train"):
        """Training: the query accuracy; infer: after the latent loop only, and after fine-tuning (last:
        the one validation selects by)."""
        names = ["acc"] if mode == "train" else ["acc_latent", "acc"]
        return [EpisodeAccuracy(n) for n in names], names

    def meta_loss(self, model, feeds, config, noise):
        """(meta-loss, query logits): the mean task loss and the penalties on the weights."""
        hp = config["hyper_parameters"]
        _, logits, kl, penalty = leo_episodes(model, feeds, hp, ways(config), noise)
        task_loss = cross_entropy(logits, feeds[3], twice_differentiable=False)
        loss = (task_loss + hp["kl_weight"] * kl + hp["encoder_penalty_weight"] * penalty).mean()
        l2 = paddle.add_n([(w * w).sum() for w in model.penalised_weights()]) / 2
        orthogonality = net.orthogonality(model.decoder)
        loss = loss + hp["l2_penalty_weight"] * l2 + hp["orthogonality_penalty_weight"] * orthogonality
        return loss, logits

    def train_forward(self, model, metrics_list, batch_data, config):
        feeds = self.create_feeds(batch_data, config)
        xs, _, xq, _ = feeds
        shapes = (xs.shape[0], ways(config), xs.shape[1] // ways(config), xq.shape[1],
                  xs.shape[2])
        noise = draw_noise(self.rng, shapes, config["hyper_parameters"], paddle.get_default_dtype())
        loss, logits = self.meta_loss(model, feeds, config, noise)
        metrics_list[0].update(accuracy(logits.detach(), feeds[3]))
        return loss, metrics_list, {"loss": loss}

    def infer_forward(self, model, metrics_list, batch_data, config):
        feeds = self.create_feeds(batch_data, config)
        latent_logits, logits, _, _ = leo_episodes(model, feeds, config["hyper_parameters"],
                                                   ways(config, "infer"))
        metrics_list[0].update(accuracy(latent_logits, feeds[3]))
        metrics_list[1].update(accuracy(logits.detach(), feeds[3]))
        return metrics_list, {}

    def replace_nonfinite_gradients(self, model, config):
        """The authors' guard (model.py, grads_and_vars): when the loss or a gradient is
        not finite, the gradient of 1e-4 * sum ||W||^2 / 2 over the penalised weights
        (zero for the learned rates) replaces it, pulling the weights back."""
        penalised = {id(w) for w in model.penalised_weights()}
        with paddle.no_grad():
            for p in model.parameters():
                if p.grad is not None:
                    p.grad.set_value(1e-4 * p if id(p) in penalised else paddle.zeros_like(p))
        return True

    def estimate_batch_bytes(self, config):
        """The relation network's pairs dominate: tasks x (N K)^2 x 2L floats, a few copies."""
        hp, runner = config["hyper_parameters"], config["runner"]
        pairs = runner["train_batch_size"] * (hp["n_way"] * hp["k_spt"]) ** 2 * 2 * hp["num_latents"]
        return pairs * 4 * 8, (f"one training batch (runner.train_batch_size = {runner['train_batch_size']}, "
                               f"hyper_parameters.n_way x k_spt = {hp['n_way'] * hp['k_spt']} examples paired)")

    def estimate_eval_batch_bytes(self, config):
        """The pairs of one evaluation batch, as estimate_batch_bytes."""
        hp, runner = config["hyper_parameters"], config["runner"]
        episodes = min(runner["infer_batch_size"], runner["infer_episodes"])
        examples = (hp["n_way_test"] or hp["n_way"]) * hp["k_spt"]
        return episodes * examples ** 2 * 2 * hp["num_latents"] * 4 * 8, (
            f"one evaluation batch (runner.infer_batch_size = {runner['infer_batch_size']}, {examples} examples "
            f"paired)")
