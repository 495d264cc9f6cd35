"""The resolved config of a run (its bases, overrides and defaults applied):
printed when training starts and kept as MODEL_SAVE_PATH/config_resolved.yaml,
so the run folder records every value it was trained with and the command that
repeats it. A resumed run whose values changed says which."""
import os
import shlex

import yaml

from models.lib.atomic_file import atomic_write
from models.lib.config import flatten

FILE = "config_resolved.yaml"


def values(config):
    """The runner and hyper_parameters sections, as the run uses them."""
    return {"runner": config["runner"], "hyper_parameters": config["hyper_parameters"]}


class _Dumper(yaml.SafeDumper):
    """Sections and keys one per line, lists on one line (as the shipped configs)."""


_Dumper.add_representer(list, lambda dumper, data: dumper.represent_sequence(
    "tag:yaml.org,2002:seq", data, flow_style=True))


def render(config, argv):
    command = " ".join(shlex.quote(a) for a in argv)
    body = yaml.dump(values(config), Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return (f"# The resolved config of this run: {config['config_path']} with its bases, overrides and\n"
            f"# defaults applied (paths absolute). The run was started with:\n#     {command}\n{body}")


def changed_keys(save_path, config):
    """Keys whose values differ from the resolved config saved by an earlier run in SAVE_PATH."""
    path = os.path.join(save_path, FILE)
    try:
        with open(path) as f:
            earlier = yaml.safe_load(f) or {}
    except (OSError, yaml.YAMLError):
        return []
    now, before = flatten(values(config)), flatten(earlier)
    return sorted(k for k in set(now) | set(before) if now.get(k) != before.get(k))


def save(save_path, text):
    """Write TEXT to SAVE_PATH/config_resolved.yaml atomically."""
    os.makedirs(save_path, exist_ok=True)
    path = os.path.join(save_path, FILE)
    try:  # the run lock is held: one writer; a killed run's .tmp is removed by clean_stale
        with atomic_write(path, tmp=path + ".tmp") as f:
            f.write(text)
    except OSError as e:
        raise OSError(f"cannot write {path}: {e.strerror or e}") from None


def announce(config, command, say=print):
    """Print the resolved config (and which values differ from an earlier run in
    the same folder), then keep it there."""
    save_path = config["runner"]["model_save_path"]
    text = render(config, command)
    say(text, end="")
    changed = changed_keys(save_path, config)
    if changed:
        say(f"note: {save_path} was trained before with other values of {', '.join(changed)}")
    save(save_path, text)
