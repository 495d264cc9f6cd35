"""Config loading: typed overrides, validation errors that name the key, paths
relative to the config file, and the two shipped configs agreeing on their keys."""
import glob
import os
import re

import pytest

from conftest import MODEL_DIR, ROOT
from models.multitask.maml.options import HYPER_PARAMETER_OPTIONS
from models.multitask.maml.omniglot_reader import READER_OPTIONS
from tools.utils import runtime
from models.lib.config import RUNNER_OPTIONS, ConfigError, parse_override, read_config_tree

CONFIG = os.path.join(MODEL_DIR, "config.yaml")
BIGDATA = os.path.join(MODEL_DIR, "config_bigdata.yaml")


def load(path=CONFIG, overrides=(), warnings=None):
    """As the drivers load a config: the model's and its readers' keys."""
    return runtime.load_model_and_config(path, list(overrides),
                                         warn=(warnings.append if warnings is not None else print))[0]


def test_overrides_are_typed():
    assert parse_override("runner.epochs=3") == ("runner.epochs", 3)
    assert parse_override("hyper_parameters.first_order=True") == ("hyper_parameters.first_order", True)
    assert parse_override("hyper_parameters.base_optimizer.learning_rate=0.1")[1] == 0.1
    assert parse_override("hyper_parameters.rotations=[0, 90]")[1] == [0, 90]
    config = load(overrides=["runner.epochs=3", "hyper_parameters.meta_optimizer.learning_rate=1",
                             "hyper_parameters.first_order=true"])
    assert config["runner"]["epochs"] == 3
    assert config["hyper_parameters"]["meta_optimizer"]["learning_rate"] == 1.0
    assert config["hyper_parameters"]["first_order"] is True
    # PyYAML (YAML 1.1) reads 1e-3 as a string; a float key still takes it
    config = load(overrides=["hyper_parameters.meta_optimizer.learning_rate=1e-3"])
    assert config["hyper_parameters"]["meta_optimizer"]["learning_rate"] == 0.001


@pytest.mark.parametrize("override, message", [
    ("runner.epoch=3", r"unknown key runner\.epoch \(did you mean runner\.epochs\?\)"),
    ("hyper_parameters.conv_kernel=3", r"unknown key hyper_parameters\.conv_kernel"),
    ("runner.epochs=abc", r"runner\.epochs = 'abc' has type str, expected int"),
    ("hyper_parameters.first_order=yes please", r"first_order = 'yes please' has type str, expected bool"),
    ("hyper_parameters.n_way=1", r"hyper_parameters\.n_way = 1, expected an integer >= 2"),
    ("hyper_parameters.k_spt=0", r"hyper_parameters\.k_spt = 0, expected an integer >= 1"),
    ("hyper_parameters.update_step=-1", r"update_step = -1, expected an integer >= 0"),
    ("hyper_parameters.base_optimizer.learning_rate=-0.1", r"learning_rate = -0.1, expected a number > 0"),
    ("hyper_parameters.downsample=avgpool", r"downsample = 'avgpool', expected one of stride, maxpool"),
    ("hyper_parameters.rotations=[45]", r"rotations = \[45\], expected a list of distinct angles"),
    ("runner.train_batch_size=2.5", r"train_batch_size = 2.5 has type float, expected int"),
    ("trainer.epochs=1", r"unknown section 'trainer'"),
    ("epochs", r"expected section\.key=value"),
    ("runner.model_save_path=", r"runner\.model_save_path is empty, expected a path"),
    ("runner.seed=-1", r"runner\.seed = -1, expected an integer from 0 to 2\*\*32 - 1"),
    ("runner.infer_seed=1099511627776", r"runner\.infer_seed = 1099511627776, expected an integer from 0"),
    ("runner.epochs.x=1", r"runner\.epochs is a value, not a section, so runner\.epochs\.x cannot be set"),
    ("hyper_parameters.base_optimizer.learning_rate=.inf", r"learning_rate = inf, expected a finite number"),
])
def test_bad_values_name_the_key(override, message):
    with pytest.raises(ConfigError, match=message) as error:
        load(overrides=[override])
    if "section" not in message:
        assert "config.yaml" in str(error.value)
    assert "\n" not in str(error.value)


def test_a_folder_given_as_config_is_named(tmp_path):
    with pytest.raises(ConfigError, match="is a directory; expected a YAML file such as"):
        load(str(tmp_path))


def test_missing_file_and_yaml_syntax_error(tmp_path):
    with pytest.raises(ConfigError, match="config file .*nope.yaml not found"):
        load(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "bad.yaml"
    bad.write_text("runner:\n  epochs: 1\n  seed: [1,\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: YAML syntax error at line \d+"):
        load(str(bad))


def test_paths_are_relative_to_the_config_file():
    config = load()
    assert config["runner"]["train_data_dir"] == os.path.join(MODEL_DIR, "data", "sample_data", "train")
    assert config["runner"]["model_save_path"] == os.path.join(MODEL_DIR, "output_model_maml")


def test_paddlerec_legacy_keys_warn_but_load():
    warnings = []
    config = load(overrides=["hyper_parameters.conv_kernal=[3, 3]", "runner.use_auc=False"],
                  warnings=warnings)
    assert config["hyper_parameters"]["n_way"] == 5
    assert any("conv_kernal" in w for w in warnings) and any("use_auc" in w for w in warnings)


def flat_keys(path):
    def walk(tree, prefix):
        for k, v in tree.items():
            yield from walk(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}"]
    return set(walk(read_config_tree(path), ""))


SHIPPED = sorted(glob.glob(os.path.join(MODEL_DIR, "config*.yaml")))


def test_shipped_configs_set_the_same_keys_and_load():
    """Every config of a dataset sets the same keys (the Omniglot ones config.yaml's;
    the miniImageNet ones theirs: another reader, other keys)."""
    assert len(SHIPPED) >= 5
    first_of_reader = {}
    for path in SHIPPED:
        reader = read_config_tree(path)["runner"]["train_reader_path"]
        reference = first_of_reader.setdefault(reader, CONFIG if "omniglot" in reader else path)
        assert flat_keys(path) == flat_keys(reference), path
        load(path)
    assert len(first_of_reader) == 2


def test_bigdata_configs_differ_only_where_the_paper_does():
    common = {"runner.seed", "runner.train_batches_per_epoch", "runner.epochs", "hyper_parameters.imgsize",
              "hyper_parameters.rotations", "hyper_parameters.meta_optimizer.learning_rate",
              "hyper_parameters.downsample", "hyper_parameters.bn_channel",
              "hyper_parameters.inner_loss_reduction", "runner.infer_episodes"}
    # MAML++ follows its own authors' protocol (see its header), the others the MAML paper's.
    # The Omniglot ones: the image sets' configs follow their own sources (MAML README).
    configs = [(p, c) for p, c in ((p, load(p)) for p in SHIPPED if "bigdata" in p and "plus_plus" not in p)
               if c["runner"]["train_reader_path"].endswith("omniglot_reader")]
    assert len(configs) >= 6
    # The one documented deviation: first order takes the mean reduction, because with the
    # released scaling it does not train (MAML README, "Relatives").
    first_order = [c for p, c in configs if p.endswith("first_order.yaml")]
    assert [c["hyper_parameters"]["inner_loss_reduction"] for c in first_order] == ["mean", "mean"]
    for key in common:
        section, rest = key.split(".", 1)
        values = set()
        for path, c in configs:
            if key == "hyper_parameters.inner_loss_reduction" and path.endswith("first_order.yaml"):
                continue
            value = c[section]
            for part in rest.split("."):
                value = value[part]
            values.add(str(value))
        assert len(values) == 1, key


def test_readme_documents_every_key():
    """tools/README.md documents the drivers' and the readers' keys, models/multitask/maml/KEYS.md
    MAML's: together exactly the keys declared."""
    documented = set()
    for path in (("tools", "README.md"), ("models", "multitask", "maml", "KEYS.md")):
        with open(os.path.join(ROOT, *path)) as f:
            documented |= set(re.findall(r"^\| `([a-z_.]+)` \|", f.read(), flags=re.M))
    from models.common.readers.image_classes_reader import READER_OPTIONS as RGB_READER_OPTIONS

    declared = {f"runner.{o.name}" for o in RUNNER_OPTIONS} | \
               {f"hyper_parameters.{o.name}" for o in HYPER_PARAMETER_OPTIONS + READER_OPTIONS + RGB_READER_OPTIONS}
    assert declared == documented


def test_a_key_given_twice_is_refused_in_one_line(tmp_path):
    """PyYAML keeps the last of two equal keys silently; a config must say what it runs with."""
    text = open(CONFIG).read().replace("runner:\n", "runner:\n  epochs: 7\n", 1)
    path = tmp_path / "config.yaml"
    path.write_text(text)
    line = text.splitlines().index("  epochs: 7") + 1
    with pytest.raises(ConfigError, match=rf"config file .*config.yaml: YAML syntax error at line \d+, column 3: "
                                          rf"key 'epochs' appears twice \(lines {line} and \d+\)"):
        read_config_tree(str(path))
