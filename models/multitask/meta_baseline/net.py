"""Meta-Baseline's model: the encoder (models/common/backbones.py) and the
temperature of its cosine logits (the authors' MetaBaseline, temp 10, learnable)."""
import paddle.nn as nn

from models.common.backbones import backbone_from_config


class MetaBaselineNet(nn.Layer):
    def __init__(self, config):
        super().__init__()
        hp = config["hyper_parameters"]
        self.encoder = backbone_from_config(config)
        self.temperature = self.create_parameter([1], default_initializer=nn.initializer.Constant(hp["temperature"]))
        self.temperature.stop_gradient = not hp["learn_temperature"]

    def load_encoder(self, encoder_weights):
        """The encoder's weights (and batch-norm statistics), e.g. Classifier-Baseline's
        (models/common/pretrained.encoder_weights)."""
        missing = sorted(set(self.encoder.state_dict()) - set(encoder_weights))
        if missing:
            raise ValueError(f"the pretrained weights lack encoder.{missing[0]}")
        self.encoder.set_state_dict(encoder_weights)
