"""The episode step of the learners that score every query of an episode against
every class (the metric learners, Relation and Matching Networks): scores
[T, Q, N], a loss on them and the query labels, the query accuracy.

CentroidModel: features of every support and query image, class centroids of the
support features, logits from the query features' similarity to the centroids,
cross-entropy on the query labels."""
import paddle
import paddle.nn.functional as F

from models.common.episodes import ways
from models.common.fewshot_model import FewShotModel
from models.common.metric import centroids, cosine_logits, episode_features, squared_euclidean_logits
from models.lib.metrics import EpisodeAccuracy, accuracy


class EpisodeScoresModel(FewShotModel):
    """Subclasses give episode_scores(model, feeds, n_way) -> ([T, Q, N] scores,
    higher for a likelier class; [T, Q] labels) and episode_loss(scores, labels, n_way)."""

    def create_metrics(self, config, mode="train"):
        """The query accuracy of each episode."""
        return [EpisodeAccuracy("acc")], ["acc"]

    def episode_loss(self, scores, labels, n_way):
        """Mean query cross-entropy of logits."""
        return F.cross_entropy(scores.reshape([-1, n_way]), labels.reshape([-1]))

    def train_forward(self, model, metrics_list, batch_data, config):
        n_way = ways(config)
        scores, labels = self.episode_scores(model, self.create_feeds(batch_data, config), n_way)
        loss = self.episode_loss(scores, labels, n_way)
        metrics_list[0].update(accuracy(scores.detach(), labels))
        return loss, metrics_list, {"loss": loss}

    def infer_forward(self, model, metrics_list, batch_data, config):
        with paddle.no_grad():
            scores, labels = self.episode_scores(model, self.create_feeds(batch_data, config),
                                                 ways(config, "infer"))
        metrics_list[0].update(accuracy(scores, labels))
        return metrics_list, {}


class CentroidModel(EpisodeScoresModel):
    """metric "euclidean": -||q - c||^2 (Prototypical Networks); "cosine":
    temperature x cos(q, c) (Meta-Baseline; the model's `temperature`, 1 if it has none)."""

    metric = "euclidean"

    def episode_scores(self, model, feeds, n_way):
        """[T, Q, n_way] logits and [T, Q] labels of a batch of episodes."""
        xs, ys, xq, yq = feeds
        support, query = episode_features(model.encoder, xs, xq)
        centres = centroids(support, ys, n_way)
        if self.metric == "euclidean":
            return squared_euclidean_logits(query, centres), yq
        return cosine_logits(query, centres, getattr(model, "temperature", 1.0)), yq
