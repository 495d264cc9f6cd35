"""MAML (Finn, Abbeel, Levine, 2017) in PaddleRec's DygraphModel interface.

train_forward returns the meta-objective, the mean over the meta-batch of each
task's query loss after `update_step` inner SGD steps from the meta-parameters:
    theta'_t = theta - alpha * grad_theta L_support_t(theta)   (repeated)
    loss     = mean_t L_query_t(theta'_t)
The inner loop is models/common/inner_loop.py's InnerLoop: with first_order
False its inner gradients come from paddle.grad(..., create_graph=True), so the
trainer's loss.backward() yields the true second-order meta-gradient; with
first_order True they are constants (FOMAML). ANIL and the MAML++ options are
switches of the same path. The config keys: options.py.
"""
import os
import sys

import paddle

# The shared code: models.common from the project root, utils from tools/ (PaddleRec's convention).
ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
sys.path[:0] = [p for p in (ROOT, os.path.join(ROOT, "tools")) if p not in sys.path]
from models.common.adaptation import (adapt_to_support, adapted_query_logits, evaluate_adaptation,  # noqa: E402
                                      query_accuracy_recorder, step_metrics)
from models.common.fewshot_model import FewShotModel  # noqa: E402
from models.common.inner_loop import InnerLoop, multi_step_loss_weights  # noqa: E402
from models.common.layers import cross_entropy  # noqa: E402
from models.multitask.maml import net  # noqa: E402
from models.multitask.maml.options import HYPER_PARAMETER_OPTIONS  # noqa: E402,F401  (read by the drivers)
from utils.metrics import accuracy  # noqa: E402


class DygraphModel(FewShotModel):
    """PaddleRec's model interface (see models/common/fewshot_model.py) for MAML
    few-shot classification. set_epoch(epoch) matters to MAML++'s annealed options."""

    def create_model(self, config):
        return net.build_network(config, self.inner_lr(config))

    def network_description(self, config):
        return net.network_description(config)

    @staticmethod
    def inner_lr(config):
        """The step size applied to the gradient of the *mean* support loss:
        the authors' loss (summed over a class's K images, divided by K) is n_way x the mean."""
        hp = config["hyper_parameters"]
        scale = config["data"]["n_way"] if hp["inner_loss_reduction"] == "authors" else 1
        return hp["base_optimizer"]["learning_rate"] * scale

    def inner_loop(self, dy_model, config, first_order=False, track=True):
        """The InnerLoop of this config: the learned rates if the network has them,
        the adapted weights of adapt_layers, minus the batch-norm weights when they
        are per-step (MAML++) or adapt_bn is False (the authors'): meta-learned only."""
        hp = config["hyper_parameters"]
        names = dy_model.param_names
        if hp["adapt_layers"] == "head":
            adapted = [n for n in names if n.startswith("fc.")]
        else:
            fixed_bn = hp["per_step_bn_weights"] or not hp["adapt_bn"]
            adapted = [n for n in names if not (fixed_bn and n.startswith("bn"))]
        lr = dy_model.inner_lrs() or self.inner_lr(config)
        return InnerLoop(lr, first_order=first_order, adapted=adapted, track=track)

    def create_loss(self, logits, labels):
        return cross_entropy(logits, labels)

    def create_optimizer(self, dy_model, config):
        meta = config["hyper_parameters"]["meta_optimizer"]
        lr = meta["learning_rate"]
        if meta["lr_schedule"] == "cosine":
            runner = config["runner"]
            lr = paddle.optimizer.lr.CosineAnnealingDecay(
                lr, T_max=runner["epochs"] * runner["train_batches_per_epoch"], eta_min=meta["min_learning_rate"])
        return paddle.optimizer.Adam(learning_rate=lr, parameters=dy_model.parameters())

    def create_metrics(self, config, mode="train"):
        """The query accuracy after 0, 1, ..., update_step (training) or
        update_step_test (infer) inner steps."""
        hp = config["hyper_parameters"]
        return step_metrics(hp["update_step"] if mode == "train" else hp["update_step_test"])

    def train_forward(self, dy_model, metrics_list, batch_data, config):
        """Meta-objective of one meta-batch; metrics_list[k] receives the query
        accuracy after k inner steps. Returns (loss, metrics_list, print_dict).
        The tasks go through the network tasks_per_pass at a time (0: all)."""
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
        # MAML++ (few_shot_learning_system.py): the annealed per-step weights for the first
        # multi_step_loss_epochs epochs, then the last step's loss alone.
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
        # The query loss is differentiated once (through the fast weights
        # and, behind them, the inner gradients): the fused kernels serve.
        logits = dy_model.forward_tasks(xq, fast, twice_differentiable=False, bn_step=steps - 1)
        query_losses.append(weights[-1] * cross_entropy(logits, yq, twice_differentiable=False))
        metrics_list[steps].update(accuracy(logits.detach(), yq))
        return paddle.add_n(query_losses) if len(query_losses) > 1 else query_losses[0]

    def infer_logits(self, dy_model, batch_data, config):
        """Query logits [T, Q, N] after update_step_test steps, and labels [T, Q]
        (infer.py's runner.infer_ensemble_top averages them over epochs)."""
        loop = self.inner_loop(dy_model, config, track=False)
        logits, labels = adapted_query_logits(dy_model, loop, self.create_feeds(batch_data, config),
                                              config["hyper_parameters"]["update_step_test"])
        return logits.numpy(), labels.numpy()

    def infer_forward(self, dy_model, metrics_list, batch_data, config):
        """Adapt to each test task with `update_step_test` steps (no meta-graph);
        metrics_list[k] receives the query accuracy after k steps."""
        loop = self.inner_loop(dy_model, config, track=False)
        evaluate_adaptation(dy_model, loop, self.create_feeds(batch_data, config),
                            config["hyper_parameters"]["update_step_test"], metrics_list)
        return metrics_list, {}
