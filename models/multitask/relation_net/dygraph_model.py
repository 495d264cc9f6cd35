"""Relation Networks (Sung et al., CVPR 2018, "Learning to Compare: Relation
Network for Few-Shot Learning") in PaddleRec's DygraphModel interface.

Each episode: the embedding module maps the support and query images to feature
maps; a class's map is the sum of its support maps; the relation module scores
every (class, query) pair in (0, 1); the loss is the mean squared error against
the one-hot labels (the paper's). A query goes to the class of highest score.
Trained episodically from scratch with Adam, the learning rate halved every
lr_decay_every episodes (the authors' StepLR). The network: net.py."""
import paddle
import paddle.nn.functional as F

from models.common.episodes import ways
from models.common.fewshot_model import FewShotModel
from models.lib.config import Option, positive
from models.lib.metrics import EpisodeAccuracy, accuracy
from models.multitask.relation_net.net import RelationNet

HYPER_PARAMETER_OPTIONS = [
    Option("optimizer.class", str, "Adam", "optimizer of both modules", choices=["Adam"]),
    Option("optimizer.learning_rate", float, 0.001, "initial learning rate", (positive, "a number > 0")),
    Option("optimizer.lr_decay_every", int, 100000, "the learning rate is halved every this many "
           "iterations (episodes, with train_batch_size 1)", (positive, "an integer >= 1")),
    Option("optimizer.lr_decay_gamma", float, 0.5, "the factor of each decay", (positive, "a number > 0")),
    Option("bn_channel", int, 64, "filters per conv layer of both modules", (positive, "an integer >= 1")),
    Option("relation_hidden", int, 8, "units of the relation module's hidden linear layer",
           (positive, "an integer >= 1")),
]


class DygraphModel(FewShotModel):

    def create_model(self, config):
        hp, data = config["hyper_parameters"], config["data"]
        return RelationNet(data["image_shape"][0], data["image_shape"][1], hp["bn_channel"], hp["relation_hidden"])

    def network_description(self, config):
        hp = config["hyper_parameters"]
        return {"model": "relation_net", "in_channels": config["data"]["image_shape"][0],
                "image_size": config["data"]["image_shape"][1], "bn_channel": hp["bn_channel"],
                "relation_hidden": hp["relation_hidden"]}

    def create_optimizer(self, model, config):
        opt = config["hyper_parameters"]["optimizer"]
        schedule = paddle.optimizer.lr.StepDecay(opt["learning_rate"], step_size=opt["lr_decay_every"],
                                                 gamma=opt["lr_decay_gamma"])
        return paddle.optimizer.Adam(learning_rate=schedule, parameters=model.parameters())

    def create_metrics(self, config, mode="train"):
        return [EpisodeAccuracy("acc")], ["acc"]

    def chance_loss(self, config):
        """The squared error of the best constant score, 1 / N: (N - 1) / N^2."""
        n = ways(config)
        return (n - 1) / n ** 2

    def train_forward(self, model, metrics_list, batch_data, config):
        xs, ys, xq, yq = self.create_feeds(batch_data, config)
        n_way = ways(config)
        scores = model.scores(xs, ys, xq, n_way)
        loss = F.mse_loss(scores, F.one_hot(yq, n_way).astype(scores.dtype))
        metrics_list[0].update(accuracy(scores.detach(), yq))
        return loss, metrics_list, {"loss": loss}

    def infer_forward(self, model, metrics_list, batch_data, config):
        xs, ys, xq, yq = self.create_feeds(batch_data, config)
        with paddle.no_grad():
            scores = model.scores(xs, ys, xq, ways(config, "infer"))
        metrics_list[0].update(accuracy(scores, yq))
        return metrics_list, {}
