"""The optimizer of Classifier-Baseline and Meta-Baseline (the authors'
make_optimizer: SGD, momentum 0.9, weight decay, MultiStepLR x0.1) and its config keys."""
import paddle

from models.lib.config import Option, at_least, positive

SGD_OPTIONS = [
    Option("optimizer.class", str, "SGD", "SGD with momentum (the authors' make_optimizer)", choices=["SGD"]),
    Option("optimizer.learning_rate", float, 0.1, "initial learning rate", (positive, "a number > 0")),
    Option("optimizer.momentum", float, 0.9, "momentum", (at_least(0), "a number >= 0")),
    Option("optimizer.weight_decay", float, 5e-4, "L2 weight decay", (at_least(0), "a number >= 0")),
    Option("optimizer.milestones", list, [], "epochs after which the learning rate is divided by 10",
           (lambda v: all(isinstance(e, int) and not isinstance(e, bool) and e > 0 for e in v),
            "a list of positive integers")),
]


def sgd_with_milestones(model, config):
    """SGD with momentum and weight decay, x0.1 at each milestone epoch (stepped per iteration)."""
    opt, runner = config["hyper_parameters"]["optimizer"], config["runner"]
    per_epoch = runner["train_batches_per_epoch"]
    rate = opt["learning_rate"]
    if opt["milestones"]:
        rate = paddle.optimizer.lr.MultiStepDecay(rate, [m * per_epoch for m in opt["milestones"]], gamma=0.1)
    return paddle.optimizer.Momentum(learning_rate=rate, momentum=opt["momentum"], parameters=model.parameters(),
                                     weight_decay=opt["weight_decay"])
