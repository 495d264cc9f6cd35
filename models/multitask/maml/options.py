"""The config keys of MAML and its relatives (hyper_parameters.*): the model's
own, the network's (net.py) and the test's. The episode keys (n_way, k_spt, ...)
belong to the reader the config names (omniglot_reader.py, models/common/episodes.py)."""
from models.multitask.maml.net import NETWORK_OPTIONS
from models.lib.config import Option, at_least, positive

MODEL_OPTIONS = [
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
    Option("multi_step_loss_epochs", int, 10, "epochs over which the multi-step loss weights anneal; "
           "afterwards the last step's loss alone, as the MAML++ code",
           (positive, "an integer >= 1")),
    Option("learn_inner_lr", bool, False, "MAML++: meta-learn one inner learning rate per parameter "
           "tensor and inner step, starting at alpha (steps beyond update_step at test use the last)"),
    Option("per_step_bn_weights", bool, False, "MAML++: one batch-norm scale and bias per inner step, "
           "meta-learned and left out of the inner loop (batch statistics are always the current batch's)"),
    Option("adapt_bn", bool, True, "the inner loop adapts the batch-norm weights too; False: meta-learned "
           "only, as the authors' (their batch-norm variables are outside the weights the inner loop updates)"),
    Option("adapt_layers", str, "all", "all: the inner loop adapts every parameter (MAML); head: only "
           "the classifier fc.weight and fc.bias (ANIL, Raghu et al. 2020)", choices=["all", "head"]),
    Option("tasks_per_pass", int, 0, "meta-training tasks that go through the network together (0: the "
           "whole meta-batch); about 100 support images per pass was fastest on a 2-core CPU",
           (at_least(0), "an integer >= 0")),
]

# How test episodes are classified (MAML and Reptile).
EVALUATION_OPTIONS = [
    Option("test_queries_one_at_a_time", bool, False, "False: a test episode's query images go through the "
           "network together, so batch norm uses their joint statistics (transductive, as the MAML code); "
           "True: each query image goes through with the support set alone (the Reptile paper's "
           "non-transductive test)"),
]

HYPER_PARAMETER_OPTIONS = MODEL_OPTIONS + NETWORK_OPTIONS + EVALUATION_OPTIONS
