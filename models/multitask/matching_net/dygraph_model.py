"""Matching Networks (Vinyals et al., NeurIPS 2016, "Matching Networks for One
Shot Learning") in PaddleRec's DygraphModel interface.

Each episode: the encoder maps the support and query images to features (with
`fce`: the full context embeddings of net.py on top); a query's class
probabilities are the softmax attention over the support images, by cosine
similarity, summed per label; the loss is their negative log-likelihood on the
query labels. Trained episodically from scratch with Adam, the learning rate
halved every lr_decay_every episodes."""
import paddle
import paddle.nn.functional as F

from models.common.backbones import BACKBONE_OPTIONS, backbone_description
from models.common.episodes import ways
from models.common.fewshot_model import FewShotModel
from models.common.metric import episode_features
from models.lib.config import Option, positive
from models.lib.metrics import EpisodeAccuracy, accuracy
from models.multitask.matching_net.net import MatchingNet

HYPER_PARAMETER_OPTIONS = [
    Option("optimizer.class", str, "Adam", "optimizer", choices=["Adam"]),
    Option("optimizer.learning_rate", float, 0.001, "initial learning rate", (positive, "a number > 0")),
    Option("optimizer.lr_decay_every", int, 100000, "the learning rate is halved every this many "
           "iterations (episodes, with train_batch_size 1)", (positive, "an integer >= 1")),
    Option("optimizer.lr_decay_gamma", float, 0.5, "the factor of each decay", (positive, "a number > 0")),
    Option("fce", bool, False, "full context embeddings: a bidirectional LSTM over the support set and an "
           "attention LSTM over it for each query (the paper's FCE)"),
    Option("fce_steps", int, 5, "processing steps K of the attention LSTM", (positive, "an integer >= 1")),
] + BACKBONE_OPTIONS


class DygraphModel(FewShotModel):

    def create_model(self, config):
        return MatchingNet(config)

    def network_description(self, config):
        hp = config["hyper_parameters"]
        return dict(backbone_description(config), model="matching_net", fce=hp["fce"])

    def create_optimizer(self, model, config):
        opt = config["hyper_parameters"]["optimizer"]
        schedule = paddle.optimizer.lr.StepDecay(opt["learning_rate"], step_size=opt["lr_decay_every"],
                                                 gamma=opt["lr_decay_gamma"])
        return paddle.optimizer.Adam(learning_rate=schedule, parameters=model.parameters())

    def create_metrics(self, config, mode="train"):
        return [EpisodeAccuracy("acc")], ["acc"]

    def episode_log_probabilities(self, model, batch_data, config, mode):
        xs, ys, xq, yq = self.create_feeds(batch_data, config)
        support, query = episode_features(model.encoder, xs, xq)
        return model.log_probabilities(support, ys, query, ways(config, mode)), yq

    def train_forward(self, model, metrics_list, batch_data, config):
        log_p, yq = self.episode_log_probabilities(model, batch_data, config, "train")
        loss = F.nll_loss(log_p.reshape([-1, log_p.shape[-1]]), yq.reshape([-1]))
        metrics_list[0].update(accuracy(log_p.detach(), yq))
        return loss, metrics_list, {"loss": loss}

    def infer_forward(self, model, metrics_list, batch_data, config):
        with paddle.no_grad():
            log_p, yq = self.episode_log_probabilities(model, batch_data, config, "infer")
        metrics_list[0].update(accuracy(log_p, yq))
        return metrics_list, {}
