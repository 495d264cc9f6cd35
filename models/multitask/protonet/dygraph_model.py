"""Prototypical Networks (Snell, Swersky, Zemel, NeurIPS 2017) in PaddleRec's
DygraphModel interface.

Each episode: the encoder maps every support and query image to a feature
vector; class c's prototype is the mean support feature of c; the logits of a
query are the negative squared Euclidean distances to the prototypes; the loss
is the query cross-entropy. Trained episodically from scratch with Adam, the
learning rate halved every lr_decay_every episodes (the authors' code,
jakesnell/prototypical-networks). Evaluation: the same nearest prototype.
"""

import paddle

from models.common.backbones import BACKBONE_OPTIONS, backbone_description
from models.common.metric_model import CentroidModel
from models.multitask.protonet.net import ProtoNet
from models.lib.config import Option, positive

HYPER_PARAMETER_OPTIONS = [
    Option("optimizer.class", str, "Adam", "optimizer", choices=["Adam"]),
    Option("optimizer.learning_rate", float, 0.001, "initial learning rate", (positive, "a number > 0")),
    Option("optimizer.lr_decay_every", int, 2000, "the learning rate is halved every this many iterations "
           "(episodes, with train_batch_size 1)", (positive, "an integer >= 1")),
    Option("optimizer.lr_decay_gamma", float, 0.5, "the factor of each decay", (positive, "a number > 0")),
] + BACKBONE_OPTIONS


class DygraphModel(CentroidModel):
    metric = "euclidean"

    def create_model(self, config):
        return ProtoNet(config)

    def network_description(self, config):
        return dict(backbone_description(config), model="protonet")

    def create_optimizer(self, model, config):
        opt = config["hyper_parameters"]["optimizer"]
        schedule = paddle.optimizer.lr.StepDecay(opt["learning_rate"], step_size=opt["lr_decay_every"],
                                                 gamma=opt["lr_decay_gamma"])
        return paddle.optimizer.Adam(learning_rate=schedule, parameters=model.parameters())
