"""Meta-Baseline (Chen, Liu, Xu, Darrell, Wang, ICCV 2021) in PaddleRec's
DygraphModel interface.

Starts from a Classifier-Baseline encoder (hyper_parameters.pretrained_encoder_path,
loaded by init_weights when training starts from scratch), then trains
episodically: the logits of a query are temperature x cosine similarity of its
features with the support centroids, the loss the query cross-entropy; the
temperature is learnable, starting at 10; SGD with momentum 0.9 and weight
decay 5e-4 at 0.001 (the authors' code, yinboc/few-shot-meta-baseline,
train_meta.py, models/meta_baseline.py, configs/train_meta_mini.yaml).
"""

from models.common.backbones import BACKBONE_OPTIONS, backbone_description
from models.common import pretrained
from models.common.metric_model import CentroidModel
from models.common.optimizers import SGD_OPTIONS, sgd_with_milestones
from models.multitask.meta_baseline.net import MetaBaselineNet
from models.lib.config import Option, positive

HYPER_PARAMETER_OPTIONS = SGD_OPTIONS + [
    Option("temperature", float, 10.0, "initial temperature of the cosine logits", (positive, "a number > 0")),
    Option("learn_temperature", bool, True, "meta-learn the temperature"),
    Option("pretrained_encoder_path", str, "", "Classifier-Baseline checkpoints to start from: a run folder "
           "(its newest good epoch) or one epoch's folder; empty: start from scratch", path=True,
           empty_path_allowed=True),
] + BACKBONE_OPTIONS


class DygraphModel(CentroidModel):
    metric = "cosine"

    def create_model(self, config):
        return MetaBaselineNet(config)

    def network_description(self, config):
        return dict(backbone_description(config), model="meta_baseline")

    def create_optimizer(self, model, config):
        return sgd_with_milestones(model, config)

    def init_weights(self, model, config):
        """The encoder of the Classifier-Baseline checkpoint that pretrained_encoder_path names."""
        path = config["hyper_parameters"]["pretrained_encoder_path"]
        if not path:
            return
        key = "hyper_parameters.pretrained_encoder_path"
        path, meta = pretrained.resolve_checkpoint(path, key)
        pretrained.check_encoder(path, meta, config, key)
        model.load_encoder(pretrained.encoder_weights(path))
        print(f"encoder loaded from {path}")
