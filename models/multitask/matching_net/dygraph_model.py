"""Matching Networks (Vinyals et al., NeurIPS 2016, "Matching Networks for One
Shot Learning") in PaddleRec's DygraphModel interface.

Each episode: the encoder maps the support and query images to features (with
`fce`: the full context embeddings of net.py on top); a query's class
probabilities are the softmax attention over the support images, by cosine
similarity, summed per label; the loss is their negative log-likelihood on the
query labels. Trained episodically from scratch with Adam, the learning rate
halved every lr_decay_every episodes."""
import paddle.nn.functional as F

from models.common.backbones import BACKBONE_OPTIONS, backbone_description
from models.common.metric import episode_features
from models.common.metric_model import EpisodeScoresModel
from models.common.optimizers import adam_step_decay_options, adam_with_step_decay
from models.lib.config import Option, positive
from models.multitask.matching_net.net import SIMILARITIES, MatchingNet

HYPER_PARAMETER_OPTIONS = adam_step_decay_options(100000) + [
    Option("fce", bool, False, "full context embeddings: a bidirectional LSTM over the support set and an "
           "attention LSTM over it for each query (the paper's FCE)"),
    Option("fce_steps", int, 5, "processing steps K of the attention LSTM", (positive, "an integer >= 1")),
    Option("similarity", str, "cosine", "the attention's similarity: cosine (the paper's formula) or "
           "support_normalized (the dot product over the support vector's norm, as the widely copied "
           "TensorFlow code; the query's norm then sets the softmax's sharpness)", choices=SIMILARITIES),
] + BACKBONE_OPTIONS


class DygraphModel(EpisodeScoresModel):

    def create_model(self, config):
        return MatchingNet(config)

    def network_description(self, config):
        hp = config["hyper_parameters"]
        return dict(backbone_description(config), model="matching_net", fce=hp["fce"], similarity=hp["similarity"])

    def create_optimizer(self, model, config):
        return adam_with_step_decay(model, config)

    def episode_scores(self, model, feeds, n_way):
        """log P(class | query) [T, Q, n_way] and the query labels."""
        xs, ys, xq, yq = feeds
        support, query = episode_features(model.encoder, xs, xq)
        return model.log_probabilities(support, ys, query, n_way), yq

    def episode_loss(self, scores, labels, n_way):
        """The negative log-likelihood of the query labels."""
        return F.nll_loss(scores.reshape([-1, n_way]), labels.reshape([-1]))
