"""MAML (Finn, Abbeel, Levine, 2017) in PaddleRec's DygraphModel interface.

train_forward returns the meta-objective, the mean over the meta-batch of each
task's query loss after `update_step` inner SGD steps from the meta-parameters:
    theta'_t = theta - alpha * grad_theta L_support_t(theta)   (repeated)
    loss     = mean_t L_query_t(theta'_t)
The inner loop is InnerLoop.adapt below: paddle.grad(loss, fast weights,
create_graph=True) keeps the inner gradients in the graph, so the trainer's
loss.backward() yields the true second-order meta-gradient; first_order makes
them constants (FOMAML). ANIL (adapt_layers: head) and the MAML++ options
(learned per-step rates, multi-step loss, derivative-order annealing) are data
on this one path. The network: net.py; the config keys: options.py.
"""
import paddle

from models.common.episodes import ways
from models.common.fewshot_model import FewShotModel
from models.common.layers import cross_entropy
from models.lib.metrics import EpisodeAccuracy, accuracy
from models.multitask.maml import net
from models.multitask.maml.options import HYPER_PARAMETER_OPTIONS  # noqa: F401  (read by the drivers)


def sgd(weight, grad, rate):
    """Plain SGD, the MAML paper's inner update."""
    return weight - rate * grad


def _leaf(tensor):
    leaf = tensor.detach()
    leaf.stop_gradient = False
    return leaf


class InnerLoop:
    """The inner loop on fast weights, dicts {name: tensor [T, ...]} with one row per task.

    lr: a number, or learned rates {name: tensor [S] or [S, ...]}: step k uses row
    min(k, S) - 1, broadcast against the weight (MAML++'s per-step rates, LEO's
    per-element rates as [1, ...]). adapted: the names the loop updates (None: all);
    the others pass through. update_rule(weight, grad, rate) -> new weight, or an
    object with update(name, weight, grad, rate) and start_step() (Reptile's Adam).
    track=False is evaluation: nothing is kept for a meta-gradient."""

    def __init__(self, lr, first_order=False, adapted=None, update_rule=sgd, track=True):
        if not track and isinstance(lr, dict):
            lr = {name: rate.detach() for name, rate in lr.items()}
        self.lr, self.first_order, self.track = lr, first_order, track
        self.adapted = None if adapted is None else list(adapted)
        self.update_rule = update_rule

    @property
    def second_order(self):
        """True when the loss handed to adapt() must be twice differentiable."""
        return self.track and not self.first_order

    def task_copies(self, weights, tasks):
        """The starting fast weights of TASKS tasks (detached leaves when not tracking)."""
        if self.track:
            return net.task_copies(weights, tasks)
        with paddle.no_grad():
            return {name: _leaf(w) for name, w in net.task_copies(weights, tasks).items()}

    def rate(self, name, step):
        if isinstance(self.lr, dict):
            rates = self.lr[name]
            return rates[min(step, rates.shape[0]) - 1]
        return self.lr

    def adapt(self, loss, fast, step):
        """One inner step (the STEP-th, from 1) on LOSS, the sum of the tasks' support
        losses: task t's loss depends only on row t of the fast weights, so row t of
        the gradient is task t's own. Returns the new fast weights (a new dict)."""
        names = [n for n in (self.adapted if self.adapted is not None else fast) if n in fast]
        grads = paddle.grad(loss, [fast[n] for n in names], create_graph=not self.first_order and self.track,
                            retain_graph=self.track)
        new = dict(fast)
        rule = self.update_rule
        if hasattr(rule, "start_step"):  # a stateful rule (Reptile's Adam)
            rule.start_step()
        for name, grad in zip(names, grads):
            if hasattr(rule, "update"):
                new[name] = rule.update(name, fast[name], grad, self.rate(name, step))
            else:
                new[name] = rule(fast[name], grad, self.rate(name, step))
        if not self.track:
            new = {name: _leaf(w) for name, w in new.items()}
        return new


def adapt_to_support(model, loop, x, y, steps, fast, on_step=None):
    """STEPS steps of LOOP on every task's support loss at once, from the fast
    weights FAST. Step k's forward uses step k - 1's batch-norm weights (MAML++);
    on_step(step, fast) is called after each. Returns the fast weights."""
    twice = loop.second_order  # only the exact meta-gradient needs the twice differentiable forward
    for step in range(1, steps + 1):
        logits = model.forward_tasks(x, fast, twice_differentiable=twice, bn_step=step - 1)
        fast = loop.adapt(cross_entropy(logits, y, twice_differentiable=twice).sum(), fast, step)
        if on_step is not None:
            on_step(step, fast)
    return fast


def multi_step_loss_weights(steps, epoch, anneal_epochs):
    """MAML++'s weights of the query losses after inner steps 1..steps (Antoniou
    et al. 2019): uniform at epoch 0; every epoch each of the first steps - 1
    loses 1 / (steps * anneal_epochs), down to 0.03 / steps, and the last gains it."""
    uniform, low = 1.0 / steps, 0.03 / steps
    decay = uniform / anneal_epochs
    weights = [max(uniform - epoch * decay, low)] * (steps - 1)
    return weights + [min(uniform + epoch * (steps - 1) * decay, 1.0 - (steps - 1) * low)]


def step_metrics(steps):
    """One EpisodeAccuracy per number of inner steps 0..steps (query accuracy)."""
    metrics = [EpisodeAccuracy(f"acc_step{k}") for k in range(steps + 1)]
    return metrics, [m.name() for m in metrics]


def query_logits(model, fast, xq, bn_step, xs=None):
    """Query logits [T, Q, N] with the fast weights. Batch norm takes its statistics
    from the batch: all query images of a task together (transductive, MAML's test);
    with the support images XS given, each query image goes through with the support
    set alone (the Reptile paper's non-transductive test) and no query sees another."""
    if xs is None:
        return model.forward_tasks(xq, fast, twice_differentiable=False, bn_step=bn_step)
    return paddle.concat([model.forward_tasks(paddle.concat([xs, xq[:, j: j + 1]], axis=1), fast,
                                              twice_differentiable=False, bn_step=bn_step)[:, -1:]
                          for j in range(xq.shape[1])], axis=1)


def query_accuracy_recorder(model, xq, yq, metrics, skip_step=None, xs=None):
    """on_step callback: the query accuracy with the current fast weights into
    metrics[step], except at SKIP_STEP (the caller records it); XS: see query_logits."""

    def record(step, fast):
        if step == skip_step:
            return
        with paddle.no_grad():
            metrics[step].update(accuracy(query_logits(model, fast, xq, max(step - 1, 0), xs), yq))

    return record


def evaluate_adaptation(model, loop, feeds, steps, metrics, queries_alone=False):
    """Adapt to each episode's support set with LOOP (track=False) for STEPS
    steps; metrics[k] receives the query accuracy after k steps (each query image
    with the support set alone if QUERIES_ALONE, see query_logits)."""
    xs, ys, xq, yq = feeds
    record = query_accuracy_recorder(model, xq, yq, metrics, xs=xs if queries_alone else None)
    fast = loop.task_copies(model.weights(), xs.shape[0])
    record(0, fast)
    adapt_to_support(model, loop, xs, ys, steps, fast, on_step=record)


class DygraphModel(FewShotModel):
    """PaddleRec's model interface (models/common/fewshot_model.py) for MAML.
    set_epoch(epoch) matters to MAML++'s annealed options."""

    def create_model(self, config):
        return net.build_network(config, self.inner_lr(config))

    def network_description(self, config):
        return net.network_description(config)

    @staticmethod
    def inner_lr(config):
        """The step on the gradient of the *mean* support loss: the authors' loss
        (summed over a class's K images, divided by K) is n_way x the mean."""
        hp = config["hyper_parameters"]
        scale = ways(config) if hp["inner_loss_reduction"] == "authors" else 1
        return hp["base_optimizer"]["learning_rate"] * scale

    def inner_loop(self, dy_model, config, first_order=False, track=True):
        """The learned rates if the network has them; the weights of adapt_layers,
        minus the batch-norm weights when per-step (MAML++) or adapt_bn is False."""
        hp = config["hyper_parameters"]
        names = dy_model.param_names
        if hp["adapt_layers"] == "head":
            adapted = [n for n in names if n.startswith("fc.")]
        else:
            fixed_bn = hp["per_step_bn_weights"] or not hp["adapt_bn"]
            adapted = [n for n in names if not (fixed_bn and n.startswith("bn"))]
        lr = dy_model.inner_lrs() or self.inner_lr(config)
        return InnerLoop(lr, first_order=first_order, adapted=adapted, track=track)

    def create_optimizer(self, dy_model, config):
        meta = config["hyper_parameters"]["meta_optimizer"]
        lr = meta["learning_rate"]
        if meta["lr_schedule"] == "cosine":
            runner = config["runner"]
            lr = paddle.optimizer.lr.CosineAnnealingDecay(
                lr, T_max=runner["epochs"] * runner["train_batches_per_epoch"], eta_min=meta["min_learning_rate"])
        return paddle.optimizer.Adam(learning_rate=lr, parameters=dy_model.parameters())

    def create_metrics(self, config, mode="train"):
        """The query accuracy after 0..update_step (train) or update_step_test (infer) steps."""
        hp = config["hyper_parameters"]
        return step_metrics(hp["update_step"] if mode == "train" else hp["update_step_test"])

    def train_forward(self, dy_model, metrics_list, batch_data, config):
        """Meta-objective of one meta-batch, tasks_per_pass tasks at a time (0: all);
        metrics_list[k] receives the query accuracy after k steps."""
        per_pass = config["hyper_parameters"]["tasks_per_pass"] or len(batch_data)
        task_losses = [self._task_losses(dy_model, metrics_list, batch_data[i: i + per_pass], config)
                       for i in range(0, len(batch_data), per_pass)]
        loss = paddle.concat(task_losses).mean()
        return loss, metrics_list, {"loss": loss}

    def _task_losses(self, dy_model, metrics_list, batch_data, config):
        """Every task's (weighted) query loss after adaptation, [T], all tasks in one pass."""
        hp = config["hyper_parameters"]
        first_order = hp["first_order"] or self.epoch < hp["first_order_epochs"]
        loop = self.inner_loop(dy_model, config, first_order=first_order)
        xs, ys, xq, yq = self.create_feeds(batch_data, config)
        steps = hp["update_step"]
        # MAML++: the annealed per-step weights for multi_step_loss_epochs epochs, then the last step alone.
        multi_step = hp["multi_step_loss"] and steps > 1 and self.epoch < hp["multi_step_loss_epochs"]
        weights = (multi_step_loss_weights(steps, self.epoch, hp["multi_step_loss_epochs"])
                   if multi_step else [0.0] * (steps - 1) + [1.0])
        query_losses = []  # each [T]: one loss per task
        record = query_accuracy_recorder(dy_model, xq, yq, metrics_list, skip_step=steps)

        def on_step(step, fast):
            if multi_step and step < steps:  # an intermediate query loss of the multi-step loss
                logits = dy_model.forward_tasks(xq, fast, twice_differentiable=False, bn_step=step - 1)
                query_losses.append(weights[step - 1] * cross_entropy(logits, yq, False))
                metrics_list[step].update(accuracy(logits.detach(), yq))
            else:
                record(step, fast)

        theta = loop.task_copies(dy_model.weights(), xs.shape[0])
        record(0, theta)
        fast = adapt_to_support(dy_model, loop, xs, ys, steps, theta, on_step=on_step)
        # The query loss is differentiated once (through the fast weights and the inner gradients).
        logits = dy_model.forward_tasks(xq, fast, twice_differentiable=False, bn_step=steps - 1)
        query_losses.append(weights[-1] * cross_entropy(logits, yq, twice_differentiable=False))
        metrics_list[steps].update(accuracy(logits.detach(), yq))
        return paddle.add_n(query_losses) if len(query_losses) > 1 else query_losses[0]

    def infer_logits(self, dy_model, batch_data, config):
        """Query logits [T, Q, N] after update_step_test steps, and labels [T, Q]
        (what infer.py's runner.infer_ensemble_top averages over epochs)."""
        loop = self.inner_loop(dy_model, config, track=False)
        xs, ys, xq, yq = self.create_feeds(batch_data, config)
        steps = config["hyper_parameters"]["update_step_test"]
        fast = adapt_to_support(dy_model, loop, xs, ys, steps, loop.task_copies(dy_model.weights(), xs.shape[0]))
        alone = config["hyper_parameters"]["test_queries_one_at_a_time"]
        with paddle.no_grad():
            logits = query_logits(dy_model, fast, xq, max(steps - 1, 0), xs if alone else None)
        return logits.numpy(), yq.numpy()

    def infer_forward(self, dy_model, metrics_list, batch_data, config):
        """Adapt to each test task with update_step_test steps (no meta-graph);
        metrics_list[k] receives the query accuracy after k steps."""
        loop = self.inner_loop(dy_model, config, track=False)
        hp = config["hyper_parameters"]
        evaluate_adaptation(dy_model, loop, self.create_feeds(batch_data, config), hp["update_step_test"],
                            metrics_list, queries_alone=hp["test_queries_one_at_a_time"])
        return metrics_list, {}
