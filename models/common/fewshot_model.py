"""What the models of the family share in PaddleRec's DygraphModel interface.

The drivers (tools/trainer.py, tools/infer.py) call, on a model's DygraphModel:
    create_model(config) -> paddle.nn.Layer
    create_optimizer(model, config) -> a paddle optimizer; an LR schedule is its learning rate
        (a paddle.optimizer.lr.LRScheduler), which the trainer steps after every update
    create_metrics(config, mode) -> (metrics, names); mode "train" or "infer"; per-episode
        metrics (utils.metrics.EpisodeAccuracy) that the drivers gather and summarise
    train_forward(model, metrics, batch, config) -> (loss, metrics, print_dict); the trainer
        calls loss.backward() and the optimizer step
    infer_forward(model, metrics, batch, config) -> (metrics, print_dict)
    network_description(config) -> dict a checkpoint must match to be loaded
    init_weights(model, config): called by the trainer before training from scratch (not when
        resuming, not in infer), e.g. to load pretrained weights
    set_epoch(epoch), get_state() / set_state(state): the epoch before each one is trained, and
        host-side state (e.g. a model's own RandomState) saved in every checkpoint
"""
import numpy as np
import paddle


class FewShotModel:
    """Defaults of the hooks, and the feeds of an episode batch."""

    epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def init_weights(self, model, config):
        pass

    def get_state(self):
        return None

    def set_state(self, state):
        pass

    def create_feeds(self, batch_data, config):
        """batch_data: list of episodes (support_x, support_y, query_x, query_y).
        Returns four tensors stacked over tasks: [T, N*K, C, H, W], [T, N*K],
        [T, N*Q, C, H, W], [T, N*Q]."""
        dtype = paddle.get_default_dtype()
        columns = list(zip(*batch_data))
        return [paddle.to_tensor(np.stack(columns[0]).astype(dtype)),
                paddle.to_tensor(np.stack(columns[1])),
                paddle.to_tensor(np.stack(columns[2]).astype(dtype)),
                paddle.to_tensor(np.stack(columns[3]))]
