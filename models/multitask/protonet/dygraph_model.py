"""Prototypical Networks (Snell, Swersky, Zemel, NeurIPS 2017) in PaddleRec's
DygraphModel interface.

Each episode: the encoder maps every support and query image to a feature
vector; class c's prototype is the mean support feature of c; the logits of a
query are the negative squared Euclidean distances to the prototypes; the loss
is the query cross-entropy. Trained episodically from scratch with Adam, the
learning rate halved every lr_decay_every episodes (the authors' code,
jakesnell/prototypical-networks). Evaluation: the same nearest prototype.
"""

from models.common.backbones import BACKBONE_OPTIONS, backbone_description
from models.common.metric_model import CentroidModel
from models.common.optimizers import adam_step_decay_options, adam_with_step_decay
from models.multitask.protonet.net import ProtoNet

HYPER_PARAMETER_OPTIONS = adam_step_decay_options(2000) + BACKBONE_OPTIONS


class DygraphModel(CentroidModel):
    metric = "euclidean"

    def create_model(self, config):
        return ProtoNet(config)

    def network_description(self, config):
        return dict(backbone_description(config), model="protonet")

    def create_optimizer(self, model, config):
        return adam_with_step_decay(model, config)
