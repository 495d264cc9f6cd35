"""Reading a config file: YAML with every key given once, and its bases resolved
(a variant names `base: <file in the same folder>` and states only what differs)."""
import os

import yaml


class ConfigError(ValueError):
    """A bad config file, key or value; its message is one line for the user."""


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a key given twice in one mapping is an error
    (PyYAML keeps the last silently: a config would not say what it runs with)."""

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} appears twice (lines {seen[key] + 1} and {key_node.start_mark.line + 1})",
                    key_node.start_mark)
            seen[key] = key_node.start_mark.line
        return super().construct_mapping(node, deep)


def read_yaml(path):
    if os.path.isdir(path):
        raise ConfigError(f"config file {path} is a directory; expected a YAML file such as {path}/config.yaml")
    if not os.path.isfile(path):
        raise ConfigError(f"config file {path} not found")
    try:
        with open(path) as f:
            tree = yaml.load(f, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"config file {path}: YAML syntax error{where}: {problem}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"config file {path}: expected a mapping with runner: and "
                          f"hyper_parameters:, found {type(tree).__name__}")
    return tree


BASE_KEY = "base"


def _merge(base, over):
    """BASE with OVER's values put in, section by section (nested dicts merged); a
    key set to null (~) in OVER is removed (a key the variant's reader does not have)."""
    merged = dict(base)
    for key, value in over.items():
        if value is None:
            merged.pop(key, None)
        elif isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def read_config_tree(path, _chain=()):
    """The YAML tree of the config at PATH with its bases resolved: a config that
    says `base: config_bigdata.yaml` (a file in the same folder) is that file with
    this one's keys put in (null removes one). Paths resolve against the folder."""
    path = os.path.abspath(path)
    if path in _chain:
        cycle = " -> ".join(os.path.basename(p) for p in _chain + (path,))
        raise ConfigError(f"config file {_chain[0]}: its bases form a cycle: {cycle}")
    tree = read_yaml(path)
    if BASE_KEY not in tree:
        return tree
    base = tree.pop(BASE_KEY)
    if not isinstance(base, str) or not base.endswith(".yaml") or os.path.basename(base) != base:
        raise ConfigError(f"config file {path}: base = {base!r}, expected the name of a .yaml file in the same folder")
    base_path = os.path.join(os.path.dirname(path), base)
    if not os.path.isfile(base_path):
        raise ConfigError(f"config file {path}: base {base} not found (expected {base_path})")
    return _merge(read_config_tree(base_path, _chain + (path,)), tree)
