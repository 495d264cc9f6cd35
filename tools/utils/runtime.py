"""What both drivers do before any work: find the model code next to the
config, choose the device, seed every random generator."""
import importlib.util
import os
import random
import sys

import numpy as np  # before paddle: Paddle 2.6 with numpy 2 fails to import otherwise
import paddle  # (the package's __init__ has silenced Paddle's "No ccache found" warning)

from models.lib.config import ConfigError, load_config, merge_options, read_config_tree

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def import_from_config_dir(config_dir, module_name, config_key):
    """Import MODULE_NAME.py from the config's folder (PaddleRec: model code lives
    next to its config). MODULE_NAME may also be a path relative to that folder,
    such as ../maml/omniglot_reader.

    Inside the project a module is imported by its package name (e.g.
    models.multitask.maml.dygraph_model), so it exists once per process however
    it is reached. A folder elsewhere (a user's own model) is loaded by path
    under a name made from the path; it imports the project by package name
    (models.common..., models.lib...), which the entry scripts make importable."""
    path = os.path.normpath(os.path.join(config_dir, module_name + ".py"))
    if not os.path.isfile(path):
        raise ConfigError(f"{config_key}: {path} not found (a module path relative to the config file, without .py)")
    package_name = _package_name(path)
    if package_name:
        return importlib.import_module(package_name)
    unique = "_fewshot_" + "".join(c if c.isalnum() else "_" for c in path)
    if unique in sys.modules:
        return sys.modules[unique]
    spec = importlib.util.spec_from_file_location(unique, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[unique]
        raise
    return module


def _package_name(path):
    """models.x.y for ROOT/models/x/y.py when every folder on the way is a package, else None."""
    relative = os.path.relpath(path, ROOT)
    parts = relative[:-len(".py")].split(os.sep)
    if relative.startswith("..") or not all(p.isidentifier() for p in parts):
        return None
    folders = [os.path.join(ROOT, *parts[:i]) for i in range(1, len(parts))]
    if not all(os.path.isfile(os.path.join(f, "__init__.py")) for f in folders):
        return None
    return ".".join(parts)


def import_readers(config_dir, runner):
    """The train and infer reader modules named by the runner section."""
    return [import_from_config_dir(config_dir, runner[key], f"runner.{key}")
            for key in ("train_reader_path", "infer_reader_path")]


def resolve_config(config_path, overrides, warn=print):
    """(config, model module) for CONFIG_PATH: its bases resolved, the overrides
    applied, every key checked against the model's keys plus its readers' keys."""
    config_path = os.path.abspath(config_path)
    read_config_tree(config_path)  # a missing or broken file (or base) is reported before any import
    config_dir = os.path.dirname(config_path)
    model_module = import_from_config_dir(config_dir, "dygraph_model", "model code")

    def hyper_parameter_options(runner):
        readers = import_readers(config_dir, runner)
        return merge_options(model_module.HYPER_PARAMETER_OPTIONS, *(r.READER_OPTIONS for r in readers))

    return load_config(config_path, overrides, hyper_parameter_options, warn=warn), model_module


def load_model_and_config(config_path, overrides, warn=print):
    """Returns (config, DygraphModel instance, model module) for CONFIG_PATH;
    config["data"] is what the training reader says of the data (image shape,
    n_way), for the model to build itself."""
    config, model_module = resolve_config(config_path, overrides, warn)
    config["data"] = import_readers(config["config_dir"], config["runner"])[0].describe(config)
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


def lr_scheduler_of(optimizer):
    """The LR schedule an optimizer was created with (its learning rate is then a
    paddle.optimizer.lr.LRScheduler), else None: create_optimizer hands the
    schedule back inside the optimizer."""
    schedule = optimizer._learning_rate  # Paddle keeps the learning_rate argument here
    return schedule if isinstance(schedule, paddle.optimizer.lr.LRScheduler) else None
