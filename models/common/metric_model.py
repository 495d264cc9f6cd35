"""The episode step of the metric learners: features of every support and
query image, class centroids of the support features, logits from the query
features' similarity to the centroids, cross-entropy on the query labels."""
import paddle
import paddle.nn.functional as F

from models.common.episodes import ways
from models.common.fewshot_model import FewShotModel
from models.common.metric import centroids, cosine_logits, episode_features, squared_euclidean_logits
from models.lib.metrics import EpisodeAccuracy, accuracy


class CentroidModel(FewShotModel):
    """metric "euclidean": -||q - c||^2 (Prototypical Networks); "cosine":
    temperature x cos(q, c) (Meta-Baseline; the model's `temperature`, 1 if it has none)."""

    metric = "euclidean"

    def create_metrics(self, config, mode="train"):
        """The query accuracy of each episode."""
        return [EpisodeAccuracy("acc")], ["acc"]

    def episode_logits(self, model, feeds, n_way):
        """[T, Q, n_way] logits and [T, Q] labels of a batch of episodes."""
        xs, ys, xq, yq = feeds
        support, query = episode_features(model.encoder, xs, xq)
        centres = centroids(support, ys, n_way)
        if self.metric == "euclidean":
            return squared_euclidean_logits(query, centres), yq
        return cosine_logits(query, centres, getattr(model, "temperature", 1.0)), yq

    def train_forward(self, model, metrics_list, batch_data, config):
        """Mean query cross-entropy over the episodes of the batch."""
        logits, labels = self.episode_logits(model, self.create_feeds(batch_data, config), ways(config))
        loss = F.cross_entropy(logits.reshape([-1, logits.shape[-1]]), labels.reshape([-1]))
        metrics_list[0].update(accuracy(logits.detach(), labels))
        return loss, metrics_list, {"loss": loss}

    def infer_forward(self, model, metrics_list, batch_data, config):
        with paddle.no_grad():
            logits, labels = self.episode_logits(model, self.create_feeds(batch_data, config),
                                                 ways(config, "infer"))
        metrics_list[0].update(accuracy(logits, labels))
        return metrics_list, {}
