"""MAML (Finn, Abbeel, Levine, 2017) in PaddleRec's DygraphModel interface.

train_forward returns the meta-objective, the mean over the meta-batch of each
task's query loss after `update_step` inner SGD steps from the meta-parameters:
    theta'_t = theta - alpha * grad_theta L_support_t(theta)   (repeated)
    loss     = mean_t L_query_t(theta'_t)
The inner gradients come from paddle.grad(..., create_graph=True), so the
driver's loss.backward() yields the true second-order meta-gradient;
`first_order: True` drops the second-order terms (FOMAML).
"""
import os
import sys

import numpy as np
import paddle

from net import DOWNSAMPLE_STYLES, MAMLConvNet, cross_entropy

# As in PaddleRec, the model folder reaches the shared tools three levels up.
sys.path.append(os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "tools")))
from utils.config import Option, at_least, positive  # noqa: E402

HYPER_PARAMETER_OPTIONS = [
    Option("meta_optimizer.class", str, "Adam", "meta (outer) optimizer", choices=["Adam"]),
    Option("meta_optimizer.learning_rate", float, 0.001, "meta learning rate (beta)",
           (positive, "a number > 0")),
    Option("meta_optimizer.lr_schedule", str, "constant", "constant, or cosine: cosine annealing of the "
           "meta learning rate over all meta-iterations down to min_learning_rate (MAML++)",
           choices=["constant", "cosine"]),
    Option("meta_optimizer.min_learning_rate", float, 0.0, "the cosine schedule's final learning rate",
           (at_least(0), "a number >= 0")),
    Option("meta_optimizer.strategy", str, "async", "PaddleRec key, not used", legacy=True),
    Option("base_optimizer.class", str, "SGD", "inner-loop optimizer", choices=["SGD"]),
    Option("base_optimizer.learning_rate", float, 0.4, "inner-loop step size (alpha)",
           (positive, "a number > 0")),
    Option("base_optimizer.strategy", str, "async", "PaddleRec key, not used", legacy=True),
    Option("inner_loss_reduction", str, "mean",
           "mean: inner loss = mean cross-entropy over the support images; authors: summed and "
           "divided by k_spt as in cbfinn/maml's xent (= n_way x mean, so alpha acts n_way times larger)",
           choices=["mean", "authors"]),
    Option("update_step", int, 1, "inner steps in meta-training", (at_least(0), "an integer >= 0")),
    Option("update_step_test", int, 3, "inner steps at test", (at_least(0), "an integer >= 0")),
    Option("first_order", bool, False, "True: first-order MAML (no second derivatives)"),
    Option("first_order_epochs", int, 0, "derivative-order annealing (MAML++): first order during the "
           "first this many epochs, then as first_order says", (at_least(0), "an integer >= 0")),
    Option("multi_step_loss", bool, False, "MAML++'s multi-step loss: the meta-loss weighs the query loss "
           "after every inner step, annealed towards the last step over multi_step_loss_epochs"),
    Option("multi_step_loss_epochs", int, 10, "epochs over which the multi-step loss weights anneal",
           (positive, "an integer >= 1")),
    Option("learn_inner_lr", bool, False, "MAML++: meta-learn one inner learning rate per parameter "
           "tensor and inner step, starting at alpha (steps beyond update_step at test use the last)"),
    Option("per_step_bn_weights", bool, False, "MAML++: one batch-norm scale and bias per inner step, "
           "meta-learned and left out of the inner loop (batch statistics are always the current batch's)"),
    Option("adapt_layers", str, "all", "all: the inner loop adapts every parameter (MAML); head: only "
           "the classifier fc.weight and fc.bias (ANIL, Raghu et al. 2020)", choices=["all", "head"]),
    Option("tasks_per_pass", int, 0, "meta-training tasks that go through the network together (0: the "
           "whole meta-batch); about 100 support images per pass was fastest on a 2-core CPU",
           (at_least(0), "an integer >= 0")),
    Option("n_way", int, 5, "classes per task", (at_least(2), "an integer >= 2")),
    Option("k_spt", int, 1, "support images per class (K shots)", (positive, "an integer >= 1")),
    Option("k_query", int, 15, "query images per class in meta-training", (positive, "an integer >= 1")),
    Option("k_query_test", int, 15, "query images per class in test episodes (infer.py)",
           (positive, "an integer >= 1")),
    Option("rotations", list, [0], "each character is one class per angle listed (degrees)",
           (lambda v: len(v) >= 1 and len(set(v)) == len(v) and all(r in (0, 90, 180, 270) and
                                                                   not isinstance(r, bool) for r in v),
            "a list of distinct angles from 0, 90, 180, 270")),
    Option("task_rotation", bool, False, "task augmentation in meta-training: every image of an episode "
           "turned by one random multiple of 90 degrees"),
    Option("imgsize", int, 28, "images are resized to imgsize x imgsize",
           (at_least(16), "an integer >= 16")),
    Option("downsample", str, "stride", "stride: stride-2 convs + spatial mean (paper); "
           "maxpool: stride-1 convs + 2x2 max-pool (PaddleRec)", choices=list(DOWNSAMPLE_STYLES)),
    Option("bn_channel", int, 64, "filters per conv layer", (positive, "an integer >= 1")),
    Option("conv_stride", int, 1, "PaddleRec key; `downsample` decides the stride", legacy=True),
    Option("conv_padding", int, 1, "PaddleRec key; `downsample` decides the padding", legacy=True),
    Option("conv_kernal", list, [3, 3], "PaddleRec key; the kernel is 3x3", legacy=True),
]


def adapt(model, params, x, y, steps, lr, mode, on_step=None, adapted=None):
    """Run `steps` inner SGD steps on every task's cross_entropy(model(x_t, params_t), y_t), all
    tasks at once.

    x: [T, B, C, H, W]; y: [T, B] int64; params: list of tensors ordered like
    model.param_list, each with a leading task axis [T, ...] (see task_copies).
    lr: a number, or a tensor [len(params), S] of learned rates (parameter i at
    step k uses lr[i, min(k, S) - 1]). adapted: indices of the parameters the
    inner loop updates (None: all); the others pass through unchanged. mode:
      "second": the returned fast weights are differentiable functions of
                `params` (and learned rates) through every inner gradient;
      "first":  the inner gradients are constants (first-order MAML);
      "none":   nothing is tracked (evaluation); returns detached leaves.
    on_step(step, params) is called after each step. Step k's support forward
    uses the batch-norm weights of step k - 1 (per-step weights, MAML++).
    Returns the fast weights.
    """
    if adapted is None:
        adapted = list(range(len(params)))
    if mode == "none":
        params = [_leaf(p) for p in params]
        if isinstance(lr, paddle.Tensor):
            lr = lr.detach()
    for step in range(1, steps + 1):
        targets = [params[i] for i in adapted]
        # Summed over tasks: task t's loss depends only on row t of the
        # stacked weights, so the gradient's row t is task t's own gradient.
        if mode == "second":
            loss = cross_entropy(model.forward_tasks(x, params, bn_step=step - 1), y).sum()
            grads = paddle.grad(loss, targets, create_graph=True)
        else:  # no double gradient needed: the fused kernels
            logits = model.forward_tasks(x, params, twice_differentiable=False, bn_step=step - 1)
            grads = paddle.grad(cross_entropy(logits, y, False).sum(), targets, retain_graph=mode == "first")
        params = list(params)
        for i, g in zip(adapted, grads):
            rate = lr[i, min(step, lr.shape[1]) - 1] if isinstance(lr, paddle.Tensor) else lr
            params[i] = params[i] - rate * g
        if mode == "none":
            params = [_leaf(p) for p in params]
        if on_step is not None:
            on_step(step, params)
    return params


def task_copies(params, tasks):
    """One copy of every parameter per task, [T, ...], differentiable back to PARAMS
    (their gradient is the sum over the tasks).

    Made as a column of ones times the flattened parameter: the gradient is then
    one matrix-vector product, about twice as fast as paddle.tile's gradient on
    CPU (16 vs 10 ms for a [64, 64, 3, 3] weight and 32 tasks, forward + backward)."""
    ones = paddle.ones([tasks, 1], dtype=params[0].dtype)
    return [paddle.matmul(ones, p.reshape([1, -1])).reshape([tasks] + list(p.shape)) for p in params]


def multi_step_loss_weights(steps, epoch, anneal_epochs):
    """MAML++'s weights of the query losses after inner steps 1..steps
    (Antoniou et al. 2019): uniform at epoch 0; every epoch each of the first
    steps - 1 weights loses 1 / (steps * anneal_epochs), down to 0.03 / steps,
    and the last weight gains what they lose."""
    uniform, low = 1.0 / steps, 0.03 / steps
    decay = uniform / anneal_epochs
    weights = [max(uniform - epoch * decay, low)] * (steps - 1)
    return weights + [min(uniform + epoch * (steps - 1) * decay, 1.0 - (steps - 1) * low)]


def _leaf(tensor):
    leaf = tensor.detach()
    leaf.stop_gradient = False
    return leaf


def accuracy(logits, labels):
    """Fraction of correct argmax predictions: logits [B, n_way], labels [B] ->
    a 0-d float tensor; logits [T, B, n_way], labels [T, B] -> one per task [T]."""
    return (logits.argmax(axis=-1) == labels).astype("float32").mean(axis=-1)


def mean_and_ci95(values):
    """(mean, half-width of the 95 % normal confidence interval) of VALUES [n]."""
    if len(values) == 0:
        return float("nan"), float("nan")
    if len(values) == 1:
        return float(values.mean()), float("nan")
    return float(values.mean()), float(1.96 * values.std(ddof=1) / np.sqrt(len(values)))


class EpisodeAccuracy(paddle.metric.Metric):
    """Collects one accuracy per task; values() returns them all (the drivers
    gather them across processes), accumulate() their mean."""

    def __init__(self, name):
        super().__init__()
        self._name = name
        self.reset()

    def name(self):
        return self._name

    def reset(self):
        self._values = []

    def update(self, values):
        self._values.append(values)  # tensors: no host sync inside the step

    def values(self):
        """Every accuracy collected since reset(), float64 [n]."""
        if not self._values:
            return np.zeros([0])
        return np.concatenate([np.asarray(v, dtype="float64").reshape(-1) for v in self._values])

    def accumulate(self):
        return mean_and_ci95(self.values())[0]


class DygraphModel:
    """PaddleRec's model interface, for MAML few-shot classification.

    The trainer calls set_epoch(epoch) before each epoch (MAML++'s annealed
    options depend on it) and steps `lr_scheduler` after each meta-update when
    create_optimizer made one."""

    epoch = 0
    lr_scheduler = None

    def set_epoch(self, epoch):
        self.epoch = epoch

    HYPER_PARAMETER_OPTIONS = HYPER_PARAMETER_OPTIONS
    mean_and_ci95 = staticmethod(mean_and_ci95)

    def create_model(self, config):
        hp = config["hyper_parameters"]
        steps = max(hp["update_step"], 1)
        learned = (self.inner_lr(config), steps) if hp["learn_inner_lr"] else None
        return MAMLConvNet(n_way=hp["n_way"], in_channels=1, hidden_channels=hp["bn_channel"],
                           downsample=hp["downsample"], learned_inner_lr=learned,
                           bn_steps=steps if hp["per_step_bn_weights"] else 0)

    def network_description(self, config):
        """What a checkpoint must match to be loaded into this config's model."""
        hp = config["hyper_parameters"]
        description = {"model": "maml_conv4", "n_way": hp["n_way"], "downsample": hp["downsample"],
                       "bn_channel": hp["bn_channel"]}
        if hp["learn_inner_lr"]:
            description["learned_inner_lr_steps"] = max(hp["update_step"], 1)
        if hp["per_step_bn_weights"]:
            description["bn_steps"] = max(hp["update_step"], 1)
        return description

    def create_feeds(self, batch_data, config):
        """batch_data: list of episodes (support_x, support_y, query_x, query_y).
        Returns four tensors stacked over tasks: [T, N*K, 1, H, W], [T, N*K],
        [T, N*Q, 1, H, W], [T, N*Q]."""
        dtype = paddle.get_default_dtype()
        columns = list(zip(*batch_data))
        return [paddle.to_tensor(np.stack(columns[0]).astype(dtype)),
                paddle.to_tensor(np.stack(columns[1])),
                paddle.to_tensor(np.stack(columns[2]).astype(dtype)),
                paddle.to_tensor(np.stack(columns[3]))]

    @staticmethod
    def adapted_indices(dy_model, config):
        """Indices of the parameters the inner loop adapts: adapt_layers, minus
        per-step batch-norm weights (meta-learned only, as in MAML++)."""
        hp = config["hyper_parameters"]
        if hp["adapt_layers"] == "head":
            return [i for i, name in enumerate(dy_model.param_names) if name.startswith("fc.")]
        skip_bn = hp.get("per_step_bn_weights", False)
        return [i for i, name in enumerate(dy_model.param_names) if not (skip_bn and name.startswith("bn"))]

    def step_size(self, dy_model, config):
        """What adapt() takes as lr: the learned rates if the model has them."""
        return dy_model.inner_lrs if dy_model.inner_lrs is not None else self.inner_lr(config)

    @staticmethod
    def inner_lr(config):
        """The step size applied to the gradient of the *mean* support loss."""
        hp = config["hyper_parameters"]
        scale = hp["n_way"] if hp["inner_loss_reduction"] == "authors" else 1
        return hp["base_optimizer"]["learning_rate"] * scale

    def create_loss(self, logits, labels):
        return cross_entropy(logits, labels)

    def create_optimizer(self, dy_model, config):
        meta = config["hyper_parameters"]["meta_optimizer"]
        lr = meta["learning_rate"]
        if meta["lr_schedule"] == "cosine":
            runner = config["runner"]
            lr = self.lr_scheduler = paddle.optimizer.lr.CosineAnnealingDecay(
                lr, T_max=runner["epochs"] * runner["train_batches_per_epoch"], eta_min=meta["min_learning_rate"])
        return paddle.optimizer.Adam(learning_rate=lr, parameters=dy_model.parameters())

    def create_metrics(self, steps):
        """One EpisodeAccuracy per number of inner steps 0..steps (query accuracy)."""
        metrics = [EpisodeAccuracy(f"acc_step{k}") for k in range(steps + 1)]
        return metrics, [m.name() for m in metrics]

    def train_forward(self, dy_model, metrics_list, batch_data, config):
        """Meta-objective of one meta-batch; metrics_list[k] receives the query
        accuracy after k inner steps. Returns (loss, metrics_list, print_dict).
        The tasks go through the network tasks_per_pass at a time (0: all)."""
        per_pass = config["hyper_parameters"].get("tasks_per_pass", 0) or len(batch_data)
        task_losses = [self._task_losses(dy_model, metrics_list, batch_data[i: i + per_pass], config)
                       for i in range(0, len(batch_data), per_pass)]
        loss = paddle.concat(task_losses).mean()
        return loss, metrics_list, {"loss": loss}

    def _task_losses(self, dy_model, metrics_list, batch_data, config):
        """Every task's (weighted) query loss after adaptation, [T], all tasks in one pass."""
        hp = config["hyper_parameters"]
        first = hp["first_order"] or self.epoch < hp["first_order_epochs"]
        mode = "first" if first else "second"
        xs, ys, xq, yq = self.create_feeds(batch_data, config)
        steps = hp["update_step"]
        multi_step = hp["multi_step_loss"] and steps > 1
        weights = (multi_step_loss_weights(steps, self.epoch, hp["multi_step_loss_epochs"])
                   if multi_step else [0.0] * (steps - 1) + [1.0])
        query_losses = []  # each [T]: one loss per task
        record = self._query_accuracy_recorder(dy_model, xq, yq, metrics_list, steps)

        def on_step(step, params):
            if multi_step and step < steps:  # an intermediate query loss of the multi-step loss
                logits = dy_model.forward_tasks(xq, params, twice_differentiable=False, bn_step=step - 1)
                query_losses.append(weights[step - 1] * cross_entropy(logits, yq, False))
                metrics_list[step].update(accuracy(logits.detach(), yq))
            else:
                record(step, params)

        theta = task_copies(dy_model.param_list, xs.shape[0])
        record(0, theta)
        fast = adapt(dy_model, theta, xs, ys, steps, self.step_size(dy_model, config), mode,
                     on_step=on_step, adapted=self.adapted_indices(dy_model, config))
        # The query loss is differentiated once (through the fast weights
        # and, behind them, the inner gradients): the fused kernels serve.
        logits = dy_model.forward_tasks(xq, fast, twice_differentiable=False, bn_step=steps - 1)
        query_losses.append(weights[-1] * cross_entropy(logits, yq, twice_differentiable=False))
        metrics_list[steps].update(accuracy(logits.detach(), yq))
        return paddle.add_n(query_losses) if len(query_losses) > 1 else query_losses[0]

    def infer_forward(self, dy_model, metrics_list, batch_data, config):
        """Adapt to each test task with `update_step_test` steps (no meta-graph);
        metrics_list[k] receives the query accuracy after k steps."""
        hp = config["hyper_parameters"]
        xs, ys, xq, yq = self.create_feeds(batch_data, config)
        steps = hp["update_step_test"]
        record = self._query_accuracy_recorder(dy_model, xq, yq, metrics_list, steps + 1)
        with paddle.no_grad():
            theta = task_copies(dy_model.param_list, xs.shape[0])
        record(0, theta)
        adapt(dy_model, theta, xs, ys, steps, self.step_size(dy_model, config), "none",
              on_step=record, adapted=self.adapted_indices(dy_model, config))
        return metrics_list, {}

    @staticmethod
    def _query_accuracy_recorder(dy_model, xq, yq, metrics_list, skip_step):
        """on_step callback: every task's query accuracy with the current fast
        weights, except at `skip_step` (the caller records that one itself).
        After step k the query forward uses step k's batch-norm weights, as the
        support forward of that step did (MAML++)."""

        def record(step, params):
            if step == skip_step:
                return
            with paddle.no_grad():
                logits = dy_model.forward_tasks(xq, params, twice_differentiable=False, bn_step=max(step - 1, 0))
                metrics_list[step].update(accuracy(logits, yq))

        return record
