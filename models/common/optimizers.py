"""The optimizers of the metric learners and their config keys: SGD with momentum and
milestones (Classifier-Baseline and Meta-Baseline, the authors' make_optimizer), and
Adam with step decay (Prototypical, Relation and Matching Networks, episodic training)."""
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


def adam_step_decay_options(decay_every):
    """The keys of adam_with_step_decay; DECAY_EVERY: the model's default period."""
    return [
        Option("optimizer.class", str, "Adam", "optimizer", choices=["Adam"]),
        Option("optimizer.learning_rate", float, 0.001, "initial learning rate", (positive, "a number > 0")),
        Option("optimizer.lr_decay_every", int, decay_every, "the learning rate is halved every this many "
               "iterations (episodes, with train_batch_size 1)", (positive, "an integer >= 1")),
        Option("optimizer.lr_decay_gamma", float, 0.5, "the factor of each decay", (positive, "a number > 0")),
    ]


def adam_with_step_decay(model, config, clipped_groups=(), clip_norm=0.0):
    """Adam whose learning rate is multiplied by lr_decay_gamma every lr_decay_every iterations.
    CLIPPED_GROUPS (lists of parameters) with CLIP_NORM > 0: each group's gradient is scaled
    to global norm at most CLIP_NORM before the step (torch's clip_grad_norm per module)."""
    opt = config["hyper_parameters"]["optimizer"]
    schedule = paddle.optimizer.lr.StepDecay(opt["learning_rate"], step_size=opt["lr_decay_every"],
                                             gamma=opt["lr_decay_gamma"])
    parameters = model.parameters()
    if clipped_groups and clip_norm > 0:
        parameters = [{"params": list(group), "grad_clip": paddle.nn.ClipGradByGlobalNorm(clip_norm)}
                      for group in clipped_groups]
    return paddle.optimizer.Adam(learning_rate=schedule, parameters=parameters)
