"""Configs that name a base and state only what differs: each resolves, key by key,
to the whole file it replaced (tests/data/configs_before_bases.json, the resolved
configs of the shipped files before they were given bases), and bad bases fail in
one line."""
import glob
import json
import os

import pytest

from conftest import MODEL_DIR, ROOT
from models.lib.config import ConfigError, flatten, read_config_tree
from tools.utils import runtime

BEFORE = json.load(open(os.path.join(ROOT, "tests", "data", "configs_before_bases.json")))
SELF_CONTAINED = ("config.yaml", "config_bigdata.yaml")  # what a PaddleRec user opens first


def flat(tree, prefix):
    """The flattened section with absolute paths inside the project made relative to it."""
    return {key: os.path.relpath(value, ROOT) if isinstance(value, str) and value.startswith(ROOT + os.sep) else value
            for key, value in flatten(tree, prefix).items()}


@pytest.mark.parametrize("variant", sorted(BEFORE))
def test_each_variant_resolves_to_the_file_it_replaces(variant):
    config, _ = runtime.resolve_config(os.path.join(ROOT, variant), [], warn=lambda message: None)
    resolved = {**flat(config["runner"], "runner."), **flat(config["hyper_parameters"], "hyper_parameters.")}
    before = BEFORE[variant]
    for key in sorted(before):
        assert resolved.get(key, "<absent>") == before[key], f"{variant}: {key}"
    # Keys declared since the snapshot: a variant leaves them as its folder's config_bigdata.yaml has them.
    bigdata, _ = runtime.resolve_config(os.path.join(ROOT, os.path.dirname(variant), "config_bigdata.yaml"), [],
                                        warn=lambda message: None)
    newer = {**flat(bigdata["runner"], "runner."), **flat(bigdata["hyper_parameters"], "hyper_parameters.")}
    for key in sorted(set(resolved) - set(before)):
        assert resolved[key] == newer.get(key), f"{variant}: {key}"


def test_every_variant_names_a_base_and_is_short():
    configs = sorted(glob.glob(os.path.join(ROOT, "models", "multitask", "*", "config*.yaml")))
    variants = [p for p in configs if os.path.basename(p) not in SELF_CONTAINED]
    assert set(BEFORE) <= {os.path.relpath(p, ROOT) for p in variants}  # and the variants added since
    for path in configs:
        text = open(path).read()
        has_base = any(line.startswith("base: ") for line in text.splitlines())
        assert has_base == (path in variants), path
        if has_base:
            assert len(text.splitlines()) <= 40, f"{path}: {len(text.splitlines())} lines"


def write(folder, name, text):
    (folder / name).write_text(text)
    return str(folder / name)


def test_a_variant_overrides_and_removes_keys_of_its_base(tmp_path):
    write(tmp_path, "base.yaml", "runner:\n  epochs: 3\n  seed: 1\nhyper_parameters:\n  a:\n    b: 1\n    c: 2\n")
    path = write(tmp_path, "v.yaml", "base: base.yaml\nrunner:\n  seed: 7\nhyper_parameters:\n  a:\n    c: ~\n")
    assert read_config_tree(path) == {"runner": {"epochs": 3, "seed": 7}, "hyper_parameters": {"a": {"b": 1}}}


def test_a_missing_base_a_cycle_and_a_base_elsewhere_fail_in_one_line(tmp_path):
    path = write(tmp_path, "v.yaml", "base: nope.yaml\nrunner:\n  seed: 7\n")
    with pytest.raises(ConfigError, match=r"v.yaml: base nope.yaml not found"):
        read_config_tree(path)
    write(tmp_path, "a.yaml", "base: b.yaml\n")
    write(tmp_path, "b.yaml", "base: a.yaml\n")
    with pytest.raises(ConfigError, match=r"a.yaml: its bases form a cycle: a.yaml -> b.yaml -> a.yaml"):
        read_config_tree(str(tmp_path / "a.yaml"))
    path = write(tmp_path, "w.yaml", "base: ../config_bigdata.yaml\n")
    with pytest.raises(ConfigError, match=r"w.yaml: base = '../config_bigdata.yaml', expected the name of a "
                                          r"\.yaml file in the same folder"):
        read_config_tree(path)


def test_an_unknown_key_in_a_variant_is_named():
    variant = os.path.join(MODEL_DIR, f"typo_test_{os.getpid()}.yaml")  # a base is in the same folder
    try:
        with open(variant, "w") as f:
            f.write("base: config_bigdata.yaml\nhyper_parameters:\n  update_stpe: 2\n")
        with pytest.raises(ConfigError, match=r"unknown key hyper_parameters.update_stpe \(did you mean "
                                              r"hyper_parameters.update_step\?\)"):
            runtime.resolve_config(variant, [])
    finally:
        os.remove(variant)


@pytest.mark.slow
def test_the_resolved_config_is_printed_and_kept_beside_the_checkpoints(tmp_path):
    import subprocess
    import sys

    import yaml

    variant = os.path.join("models", "multitask", "maml", "config_bigdata_anil.yaml")
    tiny = ["runner.train_data_dir=data/sample_data/train", "runner.test_data_dir=data/sample_data/test",
            "runner.val_data_dir=", "runner.epochs=1",
            "runner.train_batches_per_epoch=1", "runner.train_batch_size=2", f"runner.model_save_path={tmp_path}"]
    command = [sys.executable, "tools/trainer.py", "-m", variant] + [a for o in tiny for a in ("-o", o)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    saved = yaml.safe_load(open(tmp_path / "config_resolved.yaml"))
    expected, _ = runtime.resolve_config(os.path.join(ROOT, variant), tiny)
    assert saved == {"runner": expected["runner"], "hyper_parameters": expected["hyper_parameters"]}
    assert saved["hyper_parameters"]["adapt_layers"] == "head"  # the variant's own key
    assert "adapt_layers: head" in result.stdout and "-o runner.epochs=1" in result.stdout
    rerun = subprocess.run(command[:-2] + ["-o", "runner.epochs=2"] + command[-2:], cwd=ROOT, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"note: {tmp_path} was trained before with other values of runner.epochs" in rerun.stdout


def test_a_half_written_resolved_config_never_stays(tmp_path, monkeypatch):
    """resolved_config.save writes FILE.tmp and renames it: interrupted in between
    (Ctrl-C) it removes the temporary; killed in between, it leaves a name the
    trainer's clean_stale removes at the next start (it runs under the run lock)."""
    import os

    from models.lib import checkpoint
    from tools.utils import resolved_config

    renamed = []
    real_replace = os.replace

    def interrupted(src, dst):
        renamed.append(src)
        raise KeyboardInterrupt

    monkeypatch.setattr(resolved_config.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        resolved_config.save(str(tmp_path), "runner: {}\n")
    assert os.listdir(tmp_path) == []
    monkeypatch.setattr(resolved_config.os, "replace", real_replace)
    with open(renamed[0], "w") as f:  # what a kill at that moment leaves
        f.write("runner: {epo")
    notes = []
    checkpoint.clean_stale(str(tmp_path), say=notes.append)
    assert os.listdir(tmp_path) == [] and len(notes) == 1, notes
