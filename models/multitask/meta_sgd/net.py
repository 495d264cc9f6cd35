"""Meta-SGD's network (Li, Zhou, Chen, Li 2017): MAML's parameter-separated
conv-4 (../maml/net.py, imported, not copied) plus alpha, one meta-learned
inner learning rate for every element of every weight.

alpha has the shape of its weight, with a leading axis of one inner step, so
MAML's InnerLoop (../maml/dygraph_model.py) takes it as learned rates
unchanged: the update is theta' = theta - alpha * grad, elementwise, and the
meta-gradient reaches both theta and alpha."""
import paddle.nn as nn

from models.multitask.maml.net import MAMLConvNet, conv4_description, conv4_from_config


class MetaSGDNet(MAMLConvNet):
    """MAMLConvNet (every argument but learned_inner_lr, which alpha replaces) and
    alpha_<weight> parameters [1, *weight.shape], drawn uniformly from RATE_INIT
    (low, high)."""

    def __init__(self, rate_init=(0.005, 0.1), **network):
        super().__init__(**network)
        low, high = rate_init
        self._alpha_attributes = []
        for name in self.param_names:
            shape = [1] + list(self.weights()[name].shape)
            attribute = "alpha_" + name.replace(".", "_")
            self.add_parameter(attribute, self.create_parameter(
                shape, default_initializer=nn.initializer.Uniform(low, high)))
            self._alpha_attributes.append(attribute)

    def inner_lrs(self):
        """alpha by weight name, {name: [1, *shape]}: InnerLoop's learned rates."""
        return {name: getattr(self, attribute) for name, attribute in zip(self.param_names, self._alpha_attributes)}


def build_network(config):
    hp = config["hyper_parameters"]
    return conv4_from_config(config, rate_init=(hp["inner_rate_init_low"], hp["inner_rate_init_high"]),
                             network_class=MetaSGDNet)


def network_description(config):
    """What a checkpoint must match to be loaded: MAML's conv-4 and the rates' layout."""
    return dict(conv4_description(config), model="meta_sgd_conv4", inner_rates="one per weight element")
