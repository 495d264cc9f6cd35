"""What the models of the family share in PaddleRec's DygraphModel interface.

The drivers (tools/trainer.py, tools/infer.py) call, on a model's DygraphModel:
    create_model(config) -> paddle.nn.Layer
    create_optimizer(model, config) -> a paddle optimizer; an LR schedule is its learning rate
        (a paddle.optimizer.lr.LRScheduler), which the trainer steps after every update
    create_metrics(config, mode) -> (metrics, names); mode "train" or "infer"; per-episode
        metrics (models.lib.metrics.EpisodeAccuracy) that the drivers gather and summarise
    train_forward(model, metrics, batch, config) -> (loss, metrics, print_dict); the trainer
        calls loss.backward() and the optimizer step
    infer_forward(model, metrics, batch, config) -> (metrics, print_dict)
    network_description(config) -> dict a checkpoint must match to be loaded
    init_weights(model, config): called by the trainer before training from scratch (not when
        resuming, not in infer), e.g. to load pretrained weights
    set_epoch(epoch), get_state() / set_state(state): the epoch before each one is trained, and
        host-side state (e.g. a model's own RandomState) saved in every checkpoint
    chance_loss(config): the training loss of a model that has learnt nothing (the trainer
        warns when the loss stays there); estimate_batch_bytes(config) -> (bytes, what):
        memory one training batch needs, naming the keys it grows with (checked before training)
    replace_nonfinite_gradients(model, config) -> bool: called when the loss or a gradient is not
        finite; True: the model has put usable gradients in place and the update goes on (default:
        False, the trainer stops before the update)
"""
import math

import numpy as np
import paddle

from models.common.episodes import mode_settings, ways


def activation_bytes(config, images):
    """One pass's first-layer feature maps of IMAGES images (float32, at least 64 channels at
    full resolution) and about as much kept for backward: the memory estimates' unit."""
    _, height, width = config["data"]["image_shape"]
    channels = max(config["hyper_parameters"].get("bn_channel", 64), 64)
    return images * height * width * channels * 4 * 2


class FewShotModel:
    """Defaults of the hooks, and the feeds of an episode batch."""

    epoch = 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def init_weights(self, model, config):
        pass

    def get_state(self):
        return None

    def replace_nonfinite_gradients(self, model, config):
        return False

    def set_state(self, state):
        pass

    def infer_logits(self, model, batch_data, config):
        """(query logits [T, Q, N], labels [T, Q]) as numpy arrays, for ensembles over
        epochs (runner.infer_ensemble_top); models that can, override it."""
        raise ValueError("runner.infer_ensemble_top: this model does not provide infer_logits; set it to 0")

    def chance_loss(self, config):
        """Cross-entropy of uniform predictions over the training episode's classes."""
        return math.log(ways(config))

    def batch_images(self, config):
        """Images through the network per training batch: episodes x ways x (shots + queries)."""
        hp = config["hyper_parameters"]
        return config["runner"]["train_batch_size"] * ways(config) * (hp["k_spt"] + hp["k_query"])

    def estimate_batch_bytes(self, config):
        """A rough lower estimate of one training batch's activations: every image's
        first-layer feature maps (float32, width channels at full resolution), a few
        tensors kept per layer for backward, once per inner step plus the query pass.
        It is there to refuse impossible configs, not to size a machine."""
        _, height, width = config["data"]["image_shape"]
        passes = config["hyper_parameters"].get("update_step", 0) + 1
        images = self.batch_images(config)
        return activation_bytes(config, images) * passes, (
            f"one training batch (runner.train_batch_size = {config['runner']['train_batch_size']}, "
            f"{images} images of {height}x{width} (hyper_parameters.imgsize), {passes} passes)")

    def estimate_eval_batch_bytes(self, config):
        """As estimate_batch_bytes, for one evaluation batch (validation and infer.py):
        runner.infer_batch_size test episodes (at most infer_episodes). Test steps build
        no graph across steps, so one pass's tensors are counted, not one per step."""
        hp, runner = config["hyper_parameters"], config["runner"]
        _, _, n_way, queries = mode_settings(config, "infer")
        _, height, width = config["data"]["image_shape"]
        images = min(runner["infer_batch_size"], runner["infer_episodes"]) * n_way * (hp["k_spt"] + queries)
        return activation_bytes(config, images), (
            f"one evaluation batch (runner.infer_batch_size = {runner['infer_batch_size']}, {images} images of "
            f"{height}x{width})")

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
