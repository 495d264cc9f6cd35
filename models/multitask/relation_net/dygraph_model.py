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
from models.common.metric_model import EpisodeScoresModel
from models.common.optimizers import adam_step_decay_options, adam_with_step_decay
from models.lib.metrics import accuracy
from models.lib.config import Option, at_least, positive
from models.multitask.relation_net.net import INITS, RelationNet

HYPER_PARAMETER_OPTIONS = adam_step_decay_options(100000) + [
    Option("bn_channel", int, 64, "filters per conv layer of both modules", (positive, "an integer >= 1")),
    Option("relation_hidden", int, 8, "units of the relation module's hidden linear layer",
           (positive, "an integer >= 1")),
    Option("grad_clip_norm", float, 0.5, "each module's gradient (embedding, relation) is scaled to this "
           "global norm at most before the step, as the authors' clip_grad_norm(..., 0.5); 0: no clipping",
           (at_least(0), "a number >= 0")),
    Option("init", str, "authors", "authors: conv weights from N(0, 2 / (9 x out channels)), linear weights "
           "from N(0, 0.01) with biases of 1 (the authors' weights_init); paddle: Paddle's defaults",
           choices=INITS),
    Option("test_queries_one_at_a_time", bool, False, "False: a test episode's query images are embedded "
           "together and all its pairs normalised together (transductive, as the authors' test); True: each "
           "query image alone and its pairs among themselves (non-transductive)"),
]


class DygraphModel(EpisodeScoresModel):

    def create_model(self, config):
        hp, data = config["hyper_parameters"], config["data"]
        return RelationNet(data["image_shape"][0], data["image_shape"][1], hp["bn_channel"], hp["relation_hidden"],
                           init=hp["init"])

    def network_description(self, config):
        hp = config["hyper_parameters"]
        return {"model": "relation_net", "in_channels": config["data"]["image_shape"][0],
                "image_size": config["data"]["image_shape"][1], "bn_channel": hp["bn_channel"],
                "relation_hidden": hp["relation_hidden"]}

    def create_optimizer(self, model, config):
        return adam_with_step_decay(model, config, [model.embedding.parameters(), model.relation.parameters()],
                                    config["hyper_parameters"]["grad_clip_norm"])

    def chance_loss(self, config):
        """The squared error of the best constant score, 1 / N: (N - 1) / N^2."""
        n = ways(config)
        return (n - 1) / n ** 2

    def episode_scores(self, model, feeds, n_way, queries_alone=False):
        xs, ys, xq, yq = feeds
        return model.scores(xs, ys, xq, n_way, queries_alone), yq

    def infer_forward(self, model, metrics_list, batch_data, config):
        with paddle.no_grad():
            scores, labels = self.episode_scores(model, self.create_feeds(batch_data, config), ways(config, "infer"),
                                                 config["hyper_parameters"]["test_queries_one_at_a_time"])
        metrics_list[0].update(accuracy(scores, labels))
        return metrics_list, {}

    def episode_loss(self, scores, labels, n_way):
        """The paper's mean squared error against the one-hot labels."""
        return F.mse_loss(scores, F.one_hot(labels, n_way).astype(scores.dtype))
