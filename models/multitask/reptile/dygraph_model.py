"""Reptile (Nichol, Achiam, Schulman 2018, "On First-Order Meta-Learning
Algorithms") in PaddleRec's DygraphModel interface.

For every task t of a meta-batch, `update_step` SGD steps on minibatches of the
task's training images move the meta-parameters theta to phi_t; the meta-update
is then
    theta <- theta + epsilon * mean_t (phi_t - theta)
(serial Reptile: a meta-batch of one task; batched Reptile: several), with
epsilon annealed linearly from meta_optimizer.learning_rate to
meta_optimizer.final_learning_rate over the run. The update is handed to the
shared trainer as a gradient, theta - mean_t phi_t, for plain SGD with step
epsilon, so checkpoints, resuming and data parallelism work as for MAML.

The network, the reader and test-time adaptation (infer_forward: full-batch
SGD on the support set) are MAML's, from the sibling folder ../maml.
"""
import importlib.util
import os
import sys

import numpy as np
import paddle

MAML_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "maml"))
if MAML_DIR not in sys.path:
    sys.path.append(MAML_DIR)  # net.py
_spec = importlib.util.spec_from_file_location("maml_dygraph_model", os.path.join(MAML_DIR, "dygraph_model.py"))
maml = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(maml)

from net import MAMLConvNet, cross_entropy  # noqa: E402
from utils.config import Option, at_least, positive  # noqa: E402  (tools/, put on sys.path by maml)

HYPER_PARAMETER_OPTIONS = [
    Option("meta_optimizer.class", str, "SGD", "the outer update theta += epsilon * (phi - theta)",
           choices=["SGD"]),
    Option("meta_optimizer.learning_rate", float, 1.0, "outer step size epsilon at the start",
           (positive, "a number > 0")),
    Option("meta_optimizer.final_learning_rate", float, 0.0, "epsilon at the end; annealed linearly",
           (at_least(0), "a number >= 0")),
    Option("base_optimizer.class", str, "SGD", "inner-loop optimizer", choices=["SGD"]),
    Option("base_optimizer.learning_rate", float, 0.1, "inner-loop SGD step size, in training and at test",
           (positive, "a number > 0")),
    Option("inner_batch_size", int, 10, "images per inner minibatch in training (drawn without "
           "replacement from the task's shuffled images, reshuffled when used up)",
           (positive, "an integer >= 1")),
    Option("update_step", int, 5, "inner SGD steps per task in meta-training", (positive, "an integer >= 1")),
    Option("update_step_test", int, 50, "full-batch inner steps on the support set at test",
           (at_least(0), "an integer >= 0")),
    Option("k_spt", int, 1, "support images per class (K shots); in training a task's images are "
           "its k_spt + k_query images per class", (positive, "an integer >= 1")),
    Option("k_query", int, 9, "more training images per class (Reptile's train shots = k_spt + k_query)",
           (positive, "an integer >= 1")),
    Option("k_query_test", int, 1, "query images per class in test episodes (infer.py)",
           (positive, "an integer >= 1")),
] + [option for option in maml.HYPER_PARAMETER_OPTIONS  # the data and network keys are MAML's
     if option.name in ("n_way", "rotations", "task_rotation", "imgsize", "downsample", "bn_channel")]


def minibatch_indices(num_images, batch_size, steps, rng):
    """STEPS index arrays of BATCH_SIZE, read off consecutive shuffles of
    range(num_images) (Nichol et al.'s sampling without replacement)."""
    needed = steps * batch_size
    order = np.concatenate([rng.permutation(num_images) for _ in range(-(-needed // num_images))])
    return [order[s * batch_size: (s + 1) * batch_size] for s in range(steps)]


def inner_sgd(model, params, x, y, batches, lr, metrics_list=None):
    """SGD from PARAMS on the minibatches x[idx], y[idx] for idx in BATCHES (no
    graph kept). metrics_list[k] receives minibatch k's accuracy before step k.
    Returns the final weights, detached."""
    params = [maml._leaf(p) for p in params]
    for k, idx in enumerate(batches):
        idx = paddle.to_tensor(idx)
        xb, yb = paddle.gather(x, idx), paddle.gather(y, idx)
        logits = model(xb, params, twice_differentiable=False)
        grads = paddle.grad(cross_entropy(logits, yb, False), params)
        params = [maml._leaf(p - lr * g) for p, g in zip(params, grads)]
        if metrics_list is not None:
            metrics_list[k].update(maml.accuracy(logits.detach(), yb))
    return params


class DygraphModel(maml.DygraphModel):
    """Reptile: MAML's network, reader and evaluation; its own meta-update."""

    HYPER_PARAMETER_OPTIONS = HYPER_PARAMETER_OPTIONS

    def create_model(self, config):
        hp = config["hyper_parameters"]
        return MAMLConvNet(n_way=hp["n_way"], in_channels=1, hidden_channels=hp["bn_channel"],
                           downsample=hp["downsample"])

    def network_description(self, config):
        hp = config["hyper_parameters"]
        return {"model": "maml_conv4", "n_way": hp["n_way"], "downsample": hp["downsample"],
                "bn_channel": hp["bn_channel"]}

    @staticmethod
    def adapted_indices(dy_model, config):
        return list(range(len(dy_model.param_names)))

    @staticmethod
    def inner_lr(config):
        return config["hyper_parameters"]["base_optimizer"]["learning_rate"]

    def create_optimizer(self, dy_model, config):
        meta, runner = config["hyper_parameters"]["meta_optimizer"], config["runner"]
        self.lr_scheduler = paddle.optimizer.lr.PolynomialDecay(
            meta["learning_rate"], decay_steps=runner["epochs"] * runner["train_batches_per_epoch"],
            end_lr=meta["final_learning_rate"], power=1.0)
        return paddle.optimizer.SGD(learning_rate=self.lr_scheduler, parameters=dy_model.parameters())

    def train_forward(self, dy_model, metrics_list, batch_data, config):
        """Returns (loss, metrics_list, print_dict). The loss's value is the mean
        over tasks of the loss on all the task's images after adaptation
        (metrics_list[update_step] gets that accuracy); its gradient with respect
        to the meta-parameters is theta - mean_t phi_t, Reptile's update direction."""
        hp = config["hyper_parameters"]
        xs, ys, xq, yq = self.create_feeds(batch_data, config)
        x, y = paddle.concat([xs, xq], axis=1), paddle.concat([ys, yq], axis=1)
        theta = dy_model.param_list
        lr, steps = self.inner_lr(config), hp["update_step"]
        phi_sum = [paddle.zeros_like(p) for p in theta]
        adapted_losses = []
        for t in range(x.shape[0]):
            batches = minibatch_indices(x.shape[1], hp["inner_batch_size"], steps, np.random)
            phi = inner_sgd(dy_model, theta, x[t], y[t], batches, lr, metrics_list)
            phi_sum = [s + p.detach() for s, p in zip(phi_sum, phi)]
            with paddle.no_grad():
                logits = dy_model(x[t], phi, twice_differentiable=False)
                adapted_losses.append(cross_entropy(logits, y[t], False))
                metrics_list[steps].update(maml.accuracy(logits, y[t]))
        tasks = x.shape[0]
        # d/dtheta of sum(theta * (theta.detach() - mean phi)) is theta - mean phi.
        surrogate = paddle.add_n([(p * (p.detach() - s / tasks)).sum() for p, s in zip(theta, phi_sum)])
        loss = paddle.stack(adapted_losses).mean() + surrogate - surrogate.detach()
        return loss, metrics_list, {"loss": loss}
