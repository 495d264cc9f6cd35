"""Reptile (Nichol, Achiam, Schulman 2018, "On First-Order Meta-Learning
Algorithms") in PaddleRec's DygraphModel interface.

For every task t of a meta-batch, `update_step` steps of the inner optimizer
(SGD, or the authors' Adam with beta1 = 0) on minibatches of the task's
training images move the meta-parameters theta to phi_t; the meta-update is then
    theta <- theta + epsilon * mean_t (phi_t - theta)
(serial Reptile: a meta-batch of one task; batched Reptile: several), with
epsilon annealed linearly from meta_optimizer.learning_rate to
meta_optimizer.final_learning_rate over the run. The update is handed to the
shared trainer as a gradient, theta - mean_t phi_t, for plain SGD with step
epsilon, so checkpoints, resuming and data parallelism work as for MAML.

The network, the inner loop and test-time adaptation (infer_forward:
full-batch SGD on the support set) are MAML's (models/multitask/maml), and so
is the episode reader; the authors' inner Adam is inner_adam.py.
"""

import numpy as np
import paddle

from models.common.fewshot_model import FewShotModel
from models.common.layers import cross_entropy
from models.lib.config import Option, at_least, positive
from models.lib.metrics import accuracy
from models.multitask.maml.dygraph_model import InnerLoop, evaluate_adaptation, step_metrics
from models.multitask.maml.net import NETWORK_OPTIONS, conv4_description, conv4_from_config
from models.multitask.maml.options import EVALUATION_OPTIONS
from models.multitask.reptile.inner_adam import AdamState, InnerAdam

HYPER_PARAMETER_OPTIONS = [
    Option("meta_optimizer.class", str, "SGD", "the outer update theta += epsilon * (phi - theta)",
           choices=["SGD"]),
    Option("meta_optimizer.learning_rate", float, 1.0, "outer step size epsilon at the start",
           (positive, "a number > 0")),
    Option("meta_optimizer.final_learning_rate", float, 0.0, "epsilon at the end; annealed linearly",
           (at_least(0), "a number >= 0")),
    Option("base_optimizer.class", str, "SGD", "inner-loop optimizer: SGD, or Adam with beta1 = 0 whose "
           "second moments run on through training and start every test episode (the authors')",
           choices=["SGD", "Adam"]),
    Option("base_optimizer.learning_rate", float, 0.1, "inner-loop step size, in training and at test",
           (positive, "a number > 0")),
    Option("inner_batch_size", int, 10, "images per inner minibatch in training (drawn without "
           "replacement from the task's shuffled images, reshuffled when used up)",
           (positive, "an integer >= 1")),
    Option("update_step", int, 5, "inner SGD steps per task in meta-training", (positive, "an integer >= 1")),
    Option("update_step_test", int, 50, "full-batch inner steps on the support set at test",
           (at_least(0), "an integer >= 0")),
] + NETWORK_OPTIONS + EVALUATION_OPTIONS


def minibatch_indices(num_images, batch_size, steps, rng):
    """STEPS index arrays of BATCH_SIZE, read off consecutive shuffles of
    range(num_images) (Nichol et al.'s sampling without replacement)."""
    needed = steps * batch_size
    order = np.concatenate([rng.permutation(num_images) for _ in range(-(-needed // num_images))])
    return [order[s * batch_size: (s + 1) * batch_size] for s in range(steps)]


def inner_adapt(model, weights, x, y, batches, loop, metrics_list=None):
    """LOOP's steps (track=False) from WEIGHTS (a dict) on the minibatches x[idx],
    y[idx] for idx in BATCHES. metrics_list[k] receives minibatch k's accuracy
    before step k. Returns the final weights, detached."""
    fast = loop.task_copies(weights, 1)
    for k, idx in enumerate(batches):
        idx = paddle.to_tensor(idx)
        xb, yb = paddle.gather(x, idx).unsqueeze(0), paddle.gather(y, idx).unsqueeze(0)
        logits = model.forward_tasks(xb, fast, twice_differentiable=False)
        fast = loop.adapt(cross_entropy(logits, yb, False).sum(), fast, k + 1)
        if metrics_list is not None:
            metrics_list[k].update(accuracy(logits.detach(), yb))
    return {name: w[0] for name, w in fast.items()}


def inner_loop(model, config, training):
    """The inner loop of the config's base_optimizer: SGD, or InnerAdam on the
    model's AdamState (written on in training, only read at test)."""
    base = config["hyper_parameters"]["base_optimizer"]
    rule = InnerAdam(model.inner_adam, persist=training) if base["class"] == "Adam" else None
    if rule is None:
        return InnerLoop(base["learning_rate"], track=False)
    return InnerLoop(base["learning_rate"], track=False, update_rule=rule)


class DygraphModel(FewShotModel):
    """Reptile: the shared conv-4, reader and evaluation; its own meta-update.
    The inner minibatches come from the model's own RandomState (seeded from
    runner.seed by create_model, saved in every checkpoint)."""

    def __init__(self):
        self.rng = np.random.RandomState(0)

    def get_state(self):
        return {"minibatch_rng": self.rng.get_state()}

    def set_state(self, state):
        self.rng.set_state(state["minibatch_rng"])

    def create_model(self, config):
        self.rng = np.random.RandomState([config["runner"]["seed"], 1])  # a stream apart from the sampler's
        net = conv4_from_config(config)
        if config["hyper_parameters"]["base_optimizer"]["class"] == "Adam":
            net.inner_adam = AdamState(net.weights())  # buffers: saved and loaded with the weights
        return net

    def network_description(self, config):
        description = conv4_description(config)
        if config["hyper_parameters"]["base_optimizer"]["class"] != "SGD":  # absent from older checkpoints
            description["inner_optimizer"] = config["hyper_parameters"]["base_optimizer"]["class"]
        return description

    def create_metrics(self, config, mode="train"):
        """Training: the accuracy on the k-th inner minibatch before its step, and
        after the last step on all the task's images; infer: the query accuracy
        after 0..update_step_test full-batch steps on the support set."""
        hp = config["hyper_parameters"]
        return step_metrics(hp["update_step"] if mode == "train" else hp["update_step_test"])

    def create_optimizer(self, dy_model, config):
        meta, runner = config["hyper_parameters"]["meta_optimizer"], config["runner"]
        schedule = paddle.optimizer.lr.PolynomialDecay(
            meta["learning_rate"], decay_steps=runner["epochs"] * runner["train_batches_per_epoch"],
            end_lr=meta["final_learning_rate"], power=1.0)
        return paddle.optimizer.SGD(learning_rate=schedule, parameters=dy_model.parameters())

    def train_forward(self, dy_model, metrics_list, batch_data, config):
        """Returns (loss, metrics_list, print_dict). The loss's value is the mean
        over tasks of the loss on all the task's images after adaptation
        (metrics_list[update_step] gets that accuracy); its gradient with respect
        to the meta-parameters is theta - mean_t phi_t, Reptile's update direction."""
        hp = config["hyper_parameters"]
        xs, ys, xq, yq = self.create_feeds(batch_data, config)
        x, y = paddle.concat([xs, xq], axis=1), paddle.concat([ys, yq], axis=1)
        theta = dy_model.weights()
        loop, steps = inner_loop(dy_model, config, training=True), hp["update_step"]
        phi_sum = {name: paddle.zeros_like(w) for name, w in theta.items()}
        adapted_losses = []
        for t in range(x.shape[0]):
            batches = minibatch_indices(x.shape[1], hp["inner_batch_size"], steps, self.rng)
            phi = inner_adapt(dy_model, theta, x[t], y[t], batches, loop, metrics_list)
            phi_sum = {name: s + phi[name].detach() for name, s in phi_sum.items()}
            with paddle.no_grad():
                logits = dy_model(x[t], phi, twice_differentiable=False)
                adapted_losses.append(cross_entropy(logits, y[t], False))
                metrics_list[steps].update(accuracy(logits, y[t]))
        tasks = x.shape[0]
        # d/dtheta of sum(theta * (theta.detach() - mean phi)) is theta - mean phi.
        surrogate = paddle.add_n([(w * (w.detach() - phi_sum[name] / tasks)).sum() for name, w in theta.items()])
        loss = paddle.stack(adapted_losses).mean() + surrogate - surrogate.detach()
        return loss, metrics_list, {"loss": loss}

    def infer_forward(self, dy_model, metrics_list, batch_data, config):
        """Full-batch steps of the inner optimizer on each test task's support set
        for update_step_test steps; metrics_list[k] receives the query accuracy
        after k steps."""
        loop = inner_loop(dy_model, config, training=False)
        hp = config["hyper_parameters"]
        evaluate_adaptation(dy_model, loop, self.create_feeds(batch_data, config), hp["update_step_test"],
                            metrics_list, queries_alone=hp["test_queries_one_at_a_time"])
        return metrics_list, {}
