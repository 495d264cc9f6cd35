"""Load, override and validate a PaddleRec-style YAML config.

A config has two sections, `runner` (the drivers' keys, RUNNER_OPTIONS below)
and `hyper_parameters` (the model's keys, declared by the model's
dygraph_model.py as HYPER_PARAMETER_OPTIONS, and its readers' keys, declared
by each reader as READER_OPTIONS). Every key is declared once with
its type, default and allowed range; an unknown key, a wrong type or a value
out of range raises ConfigError with one line naming the file and the key.
Path options are resolved relative to the config file's folder.
"""
import difflib
import math
import os

import yaml

from models.lib.config_files import ConfigError, read_config_tree, read_yaml  # noqa: F401  (re-exported)


class Option:
    """One config key: dotted name inside its section, type, default, check.

    type: bool, int, float, str or list. A float option accepts an int.
    default: REQUIRED means the key must be given.
    check: (predicate, 'what is expected') or None.
    legacy: accepted for PaddleRec compatibility but not used; a warning says so.
    path: a path relative to the config file; empty only with empty_path_allowed (then it stays empty).
    """

    def __init__(self, name, type, default, doc, check=None, choices=None, path=False,
                 legacy=False, empty_path_allowed=False):
        self.name, self.type, self.default, self.doc = name, type, default, doc
        self.check, self.choices, self.path, self.legacy = check, choices, path, legacy
        self.empty_path_allowed = empty_path_allowed


REQUIRED = object()


def positive(v):
    return v > 0


def at_least(n):
    return lambda v: v >= n


SEED_RANGE = (lambda v: 0 <= v < 2 ** 32, "an integer from 0 to 2**32 - 1 (NumPy's seeds)")


RUNNER_OPTIONS = [
    Option("train_data_dir", str, REQUIRED, "training data folder, in the reader's format",
           path=True),
    Option("train_reader_path", str, REQUIRED,
           "reader module: its file next to the config without .py, or a path relative to the config"),
    Option("test_data_dir", str, REQUIRED, "test data folder (classes disjoint from training)", path=True),
    Option("infer_reader_path", str, REQUIRED, "reader module used by infer.py, as train_reader_path"),
    Option("use_gpu", bool, False, "run on GPU 0 if Paddle was built with CUDA (else warn, use CPU)"),
    Option("seed", int, 2017, "seeds Paddle, NumPy, Python and the training episode sampler", SEED_RANGE),
    Option("train_batch_size", int, 32, "tasks per meta-batch", (positive, "an integer >= 1")),
    Option("train_batches_per_epoch", int, 100, "meta-iterations per epoch (a checkpoint per epoch)",
           (positive, "an integer >= 1")),
    Option("epochs", int, 1, "epochs to train", (positive, "an integer >= 1")),
    Option("print_interval", int, 10, "print the metrics every this many meta-iterations",
           (positive, "an integer >= 1")),
    Option("model_save_path", str, "output_model", "checkpoint folder, one sub-folder per epoch",
           path=True),
    Option("keep_last_checkpoints", int, 0, "keep only the newest this many epoch checkpoints (0: all) and, "
           "when validating, the best by validation (as many as runner.infer_ensemble_top, at least 1)",
           (at_least(0), "an integer >= 0")),
    Option("checkpoint_interval", int, 100, "also save MODEL_SAVE_PATH/in_progress at the first print "
           "(runner.print_interval) at least this many iterations after the last save, so an interrupted "
           "epoch resumes from there exactly (0: only the per-epoch checkpoints)",
           (at_least(0), "an integer >= 0")),
    Option("resume", bool, True, "continue from the newest complete checkpoint in model_save_path"),
    Option("infer_batch_size", int, 1, "test tasks adapted together (one pass through the network) in infer.py",
           (positive, "an integer >= 1")),
    Option("infer_load_path", str, "output_model", "checkpoint folder infer.py reads",
           path=True),
    Option("infer_start_epoch", int, 0, "first epoch infer.py evaluates", (at_least(0), "an integer >= 0")),
    Option("infer_end_epoch", int, 1, "infer.py evaluates epochs infer_start_epoch .. infer_end_epoch - 1",
           (positive, "an integer >= 1")),
    Option("infer_episodes", int, 600, "test episodes per evaluated epoch", (at_least(2), "an integer >= 2")),
    Option("infer_seed", int, 1234, "seed of the test episode sampler (same episodes for every epoch)", SEED_RANGE),
    Option("val_data_dir", str, "", "validation data folder (classes apart from training and test): the "
           "trainer evaluates val_episodes episodes of it after every epoch; empty: no validation",
           path=True, empty_path_allowed=True),
    Option("val_episodes", int, 300, "validation episodes after every epoch (the same ones each time)",
           (at_least(2), "an integer >= 2")),
    Option("infer_best_epoch", bool, False, "infer.py evaluates only the epoch of infer_start_epoch .. "
           "infer_end_epoch - 1 with the best validation result (the model's last metric)"),
    Option("infer_ensemble_top", int, 0, "infer.py evaluates the ensemble of the this many epochs of "
           "infer_start_epoch .. infer_end_epoch - 1 with the best validation results, their query logits "
           "averaged per episode (MAML++'s test protocol); 0: each epoch on its own",
           (at_least(0), "an integer >= 0")),
    Option("use_fleet", bool, False, "train / evaluate across the processes of paddle.distributed.launch"),
    Option("use_visual", bool, False, "also write the training curve and the test accuracies for "
           "VisualDL (MODEL_SAVE_PATH/visualdl; needs pip install visualdl)"),
    Option("use_auc", bool, False, "PaddleRec key, not used by these models", legacy=True),
]


def _type_ok(value, type_):
    if type_ is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if type_ is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, type_)


def _yaml11_float(text):
    try:
        return float(text)
    except ValueError:
        return text


def flatten(tree, prefix=""):
    """{"a": {"b": 1}} -> {"a.b": 1}: a config's keys as the command line names them."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _set_nested(tree, dotted, value, where=None):
    *parents, leaf = dotted.split(".")
    for i, p in enumerate(parents):
        tree = tree.setdefault(p, {})
        if not isinstance(tree, dict):
            raise ConfigError(f"{where or 'override'}: {'.'.join(parents[:i + 1])} is a value, not a section, "
                              f"so {dotted} cannot be set")
    tree[leaf] = value


def parse_override(text):
    """'section.key=value' -> ('section.key', value parsed as YAML)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or "." not in key:
        raise ConfigError(f"override {text!r}: expected section.key=value, e.g. runner.epochs=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def load_config(path, overrides=(), hyper_parameter_options=(), warn=print):
    """Read PATH (its bases resolved), apply overrides ('section.key=value'), validate.

    hyper_parameter_options: a list of Option, or a function of the validated
    runner section returning one (the keys of the model and of its readers).

    Returns {'runner': {...}, 'hyper_parameters': {...}, 'config_path': abs path,
    'config_dir': abs folder}; nested YAML keys stay nested, every declared key
    is present (defaults filled), path options are absolute.
    """
    path = os.path.abspath(path)
    tree = read_config_tree(path)
    for text in overrides:
        key, value = parse_override(text)
        _set_nested(tree, key, value, where=f"override {text!r}")
    sections = {"runner": RUNNER_OPTIONS, "hyper_parameters": hyper_parameter_options}
    unknown_sections = set(tree) - set(sections)
    if unknown_sections:
        raise ConfigError(f"config file {path}: unknown section {sorted(unknown_sections)[0]!r}; "
                          f"expected runner and hyper_parameters")
    config = {"config_path": path, "config_dir": os.path.dirname(path)}
    for section, options in sections.items():
        given = tree.get(section) or {}
        if not isinstance(given, dict):
            raise ConfigError(f"config file {path}: {section} must be a mapping")
        if callable(options):  # the hyper_parameters keys depend on the runner's model and readers
            options = options(config["runner"])
        config[section] = _validate_section(path, section, flatten(given), options, warn)
    return config


def merge_options(*groups):
    """One schema from the options of a model and its readers; a key declared by
    two different owners is a programming error."""
    merged = {}
    for group in groups:
        for option in group:
            if option.name in merged and merged[option.name] is not option:
                raise ConfigError(f"hyper_parameters.{option.name} is declared twice (by the model and a reader)")
            merged[option.name] = option
    return list(merged.values())


def _validate_section(path, section, given, options, warn):
    by_name = {o.name: o for o in options}
    for key in given:
        if key not in by_name:
            close = difflib.get_close_matches(key, by_name, n=1)
            hint = f" (did you mean {section}.{close[0]}?)" if close else ""
            raise ConfigError(f"config file {path}: unknown key {section}.{key}{hint}")
    values = {}
    for option in options:
        full = f"{section}.{option.name}"
        if option.name not in given:
            if option.default is REQUIRED:
                raise ConfigError(f"config file {path}: missing key {full} ({option.doc})")
            value = option.default
        else:
            value = given[option.name]
            if option.legacy:
                warn(f"warning: {full} is a PaddleRec key that this model ignores")
            if option.type is float and isinstance(value, str):
                value = _yaml11_float(value)  # PyYAML reads 1e-3 (no dot) as a string
            if not _type_ok(value, option.type):
                raise ConfigError(f"config file {path}: {full} = {value!r} has type "
                                  f"{type(value).__name__}, expected {option.type.__name__}")
            if option.type is float:
                value = float(value)
                if not math.isfinite(value):
                    raise ConfigError(f"config file {path}: {full} = {value!r}, expected a finite number")
            if option.choices is not None and value not in option.choices:
                raise ConfigError(f"config file {path}: {full} = {value!r}, expected one of "
                                  f"{', '.join(map(str, option.choices))}")
            if option.check is not None and not option.check[0](value):
                raise ConfigError(f"config file {path}: {full} = {value!r}, expected {option.check[1]}")
        if option.path and isinstance(value, str):
            if not value.strip():
                if not option.empty_path_allowed:
                    raise ConfigError(f"config file {path}: {full} is empty, expected a path")
            else:
                value = os.path.normpath(os.path.join(os.path.dirname(path), value))
        _set_nested(values, option.name, value)
    return values
