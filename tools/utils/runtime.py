"""What both drivers do before any work: find the model code next to the
config, choose the device, seed every random generator."""
import importlib
import os
import random
import sys
import warnings

import numpy as np  # before paddle: Paddle 2.6 with numpy 2 fails to import otherwise

warnings.filterwarnings("ignore", message="No ccache found")
import paddle  # noqa: E402

from utils.config import ConfigError, read_yaml  # noqa: E402


def import_from_config_dir(config_dir, module_name, config_key):
    """Import MODULE_NAME.py from the config's folder (PaddleRec: model code lives
    next to its config). MODULE_NAME may also be a path relative to that folder,
    such as ../maml/omniglot_reader (a sibling model's reader)."""
    path = os.path.normpath(os.path.join(config_dir, module_name + ".py"))
    if not os.path.isfile(path):
        raise ConfigError(f"{config_key}: {path} not found (the model code must sit next to its config)")
    module_dir = os.path.dirname(path)
    if module_dir not in sys.path:
        sys.path.insert(0, module_dir)
    return importlib.import_module(os.path.basename(module_name))


def load_model_and_config(config_path, overrides, warn=print):
    """Returns (config, DygraphModel instance, model module) for CONFIG_PATH."""
    from utils.config import load_config

    config_path = os.path.abspath(config_path)
    read_yaml(config_path)  # a missing or broken file is reported before any import
    model_module = import_from_config_dir(os.path.dirname(config_path), "dygraph_model",
                                          "model code")
    config = load_config(config_path, overrides, model_module.HYPER_PARAMETER_OPTIONS, warn=warn)
    return config, model_module.DygraphModel(), model_module


def set_device(use_gpu, warn=print):
    if use_gpu and not paddle.is_compiled_with_cuda():
        warn("warning: runner.use_gpu is True but this Paddle has no CUDA support; running on CPU")
        use_gpu = False
    paddle.set_device("gpu:0" if use_gpu else "cpu")
    return "gpu:0" if use_gpu else "cpu"


def seed_everything(seed):
    """Seed Paddle, NumPy and Python once, at the entry point."""
    paddle.seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def rng_states():
    return {"paddle": paddle.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate()}


def set_rng_states(states):
    paddle.set_rng_state(states["paddle"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
