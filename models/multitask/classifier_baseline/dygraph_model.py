"""Classifier-Baseline (Chen, Liu, Xu, Darrell, Wang, "Meta-Baseline: Exploring
Simple Meta-Learning for Few-Shot Learning", ICCV 2021) in PaddleRec's
DygraphModel interface.

Training: ordinary supervised classification of labelled images over all
meta-training classes (reader: omniglot_images_reader), SGD with momentum 0.9,
weight decay, the learning rate divided by 10 at the milestone epochs (the
authors' code, yinboc/few-shot-meta-baseline, train_classifier.py). Test: the
classifier is dropped; each episode's query images go to the support centroid
of highest cosine similarity of the encoder's features (test_few_shot.py).
"""
import math

import numpy as np
import paddle
import paddle.nn.functional as F

from models.common.backbones import BACKBONE_OPTIONS, backbone_description
from models.common.metric_model import CentroidModel
from models.common.optimizers import SGD_OPTIONS, sgd_with_milestones
from models.multitask.classifier_baseline.net import Classifier
from models.lib.metrics import accuracy

HYPER_PARAMETER_OPTIONS = SGD_OPTIONS + BACKBONE_OPTIONS


class DygraphModel(CentroidModel):
    metric = "cosine"

    def create_model(self, config):
        return Classifier(config)

    def network_description(self, config):
        return dict(backbone_description(config), model="classifier_baseline", n_classes=config["data"]["n_classes"])

    def create_optimizer(self, model, config):
        return sgd_with_milestones(model, config)

    def chance_loss(self, config):
        """Uniform predictions over every training class."""
        return math.log(config["data"]["n_classes"])

    def batch_images(self, config):
        return config["runner"]["train_batch_size"]  # a batch of labelled images, not episodes

    def train_forward(self, model, metrics_list, batch_data, config):
        images, labels = zip(*batch_data)
        x = paddle.to_tensor(np.stack(images).astype(paddle.get_default_dtype()))
        y = paddle.to_tensor(np.array(labels, dtype="int64"))
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        metrics_list[0].update(accuracy(logits.detach(), y))
        return loss, metrics_list, {"loss": loss}
