"""Meta-SGD (Li, Zhou, Chen, Li 2017, "Meta-SGD: Learning to Learn Quickly for
Few-Shot Learning") in PaddleRec's DygraphModel interface.

From the meta-parameters theta, one inner step per task with the meta-learned
rates alpha (net.py: one per weight element), then the query loss:
    theta'_t = theta - alpha * grad_theta L_support_t(theta)     (elementwise)
    loss     = mean_t L_query_t(theta'_t)
and the trainer's Adam updates theta and alpha together. The inner loop is
MAML's (../maml/dygraph_model.py, imported): it hands the fast weights to
paddle.grad(create_graph=True), so the meta-gradient is exact to second order
and reaches alpha through every fast weight; first_order: True takes the inner
gradients as constants (alpha still learns, through the update's product).
"""
from models.lib.config import Option, positive
from models.multitask.maml import dygraph_model as maml
from models.multitask.maml.options import HYPER_PARAMETER_OPTIONS as MAML_OPTIONS
from models.multitask.meta_sgd import net

# MAML's keys, less those alpha replaces (a fixed or per-layer inner rate, its loss scaling) and
# the per-step batch norm that MAML++ pairs with per-step rates.
NOT_META_SGD = ("base_optimizer.class", "base_optimizer.learning_rate", "base_optimizer.strategy",
                "inner_loss_reduction", "learn_inner_lr", "per_step_bn_weights")
HYPER_PARAMETER_OPTIONS = [o for o in MAML_OPTIONS if o.name not in NOT_META_SGD] + [
    Option("inner_rate_init_low", float, 0.005, "alpha's initial values are drawn uniformly from "
           "[inner_rate_init_low, inner_rate_init_high]", (positive, "a number > 0")),
    Option("inner_rate_init_high", float, 0.1, "the upper end of that range", (positive, "a number > 0")),
]


class DygraphModel(maml.DygraphModel):
    """MAML's training step and evaluation on MetaSGDNet; the inner loop takes
    alpha as its rates."""

    def create_model(self, config):
        hp = config["hyper_parameters"]
        if not hp["inner_rate_init_low"] <= hp["inner_rate_init_high"]:
            raise ValueError(f"config file {config['config_path']}: hyper_parameters.inner_rate_init_low = "
                             f"{hp['inner_rate_init_low']} must not exceed inner_rate_init_high = "
                             f"{hp['inner_rate_init_high']}")
        return net.build_network(config)

    def network_description(self, config):
        return net.network_description(config)

    def inner_loop(self, dy_model, config, first_order=False, track=True):
        """alpha as the rates; the weights of adapt_layers (the batch-norm weights
        only with adapt_bn)."""
        hp = config["hyper_parameters"]
        names = dy_model.param_names
        if hp["adapt_layers"] == "head":
            adapted = [n for n in names if n.startswith("fc.")]
        else:
            adapted = [n for n in names if hp["adapt_bn"] or not n.startswith("bn")]
        return maml.InnerLoop(dy_model.inner_lrs(), first_order=first_order, adapted=adapted, track=track)
