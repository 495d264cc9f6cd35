"""The structure the family grows on: generic drivers, imports that point one way
(entry scripts, model folders, models/common, models/lib), MAML's folder holding its
design card, small files, and a new model folder that trains and infers with the
drivers untouched."""
import ast
import glob
import os
import re
import subprocess
import sys
import textwrap

import pytest

from conftest import MODEL_DIR, ROOT, SAMPLE_DATA
from models.multitask.maml.options import HYPER_PARAMETER_OPTIONS as MAML_OPTIONS
from models.multitask.reptile.dygraph_model import HYPER_PARAMETER_OPTIONS as REPTILE_OPTIONS
from models.multitask.maml.omniglot_reader import READER_OPTIONS
from models.lib.config import RUNNER_OPTIONS


def python_files(*folders):
    return [p for folder in folders for p in glob.glob(os.path.join(ROOT, folder, "**", "*.py"), recursive=True)]


def string_constants(path):
    return {node.value for node in ast.walk(ast.parse(open(path).read()))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)}


def test_the_drivers_name_no_hyper_parameter_key():
    runner_keys = {o.name for o in RUNNER_OPTIONS}
    model_keys = {o.name.split(".")[-1] for o in MAML_OPTIONS + REPTILE_OPTIONS + READER_OPTIONS} - runner_keys
    for path in python_files("tools"):
        named = string_constants(path) & model_keys
        assert not named, f"{os.path.relpath(path, ROOT)} names {sorted(named)}"
        assert not re.search(r'hyper_parameters"\]\[|\bhp\[', open(path).read()), path  # no key looked up


def imported_modules(path):
    for node in ast.walk(ast.parse(open(path).read())):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module
        elif isinstance(node, ast.Import):
            yield from (a.name for a in node.names)


def test_the_layers_point_one_way():
    """Entry scripts (tools/, datasets/, benchmarks/) on top, then the model folders,
    then the shared model code (models/common), then the library (models/lib):
    nothing imports a layer above its own, and the models never import tools/."""
    below = {"models/multitask": ("models.common", "models.lib", "models.multitask"),
             "models/common": ("models.common", "models.lib"), "models/lib": ("models.lib",)}
    for folder, allowed in below.items():
        for path in python_files(folder):
            for module in imported_modules(path):
                project = module.split(".")[0] in ("models", "tools", "datasets", "benchmarks", "utils")
                assert not project or module.startswith(allowed), f"{os.path.relpath(path, ROOT)} imports {module}"
                assert not module.startswith("importlib"), f"{path} uses importlib"


def test_the_import_path_is_edited_only_by_entry_scripts_once():
    edit, late_import = "sys" + ".path", "noqa: " + "E402"  # (spelt so that this file matches neither)
    for path in python_files("models", "tools", "tests", "benchmarks", "datasets"):
        name, source = os.path.relpath(path, ROOT), open(path).read()
        lines = [line for line in source.splitlines() if edit in line]
        if name.startswith(("models", os.path.join("tools", "utils"))):
            assert not lines, f"{name} edits the import path"
        assert len(lines) <= 1, f"{name} edits the import path {len(lines)} times"
        assert late_import not in source, f"{name} has imports after code"


def test_the_maml_folder_holds_the_design_card():
    """net.py: the parameter-separated network; dygraph_model.py: the inner loop's
    paddle.grad; omniglot_reader.py: the episode reader the configs name."""
    folder = os.path.join(ROOT, "models", "multitask", "maml")
    net_source = open(os.path.join(folder, "net.py")).read()
    assert re.search(r"class MAMLConvNet\(nn.Layer\)", net_source)
    assert re.search(r"def forward\(self, x, params=None", net_source)
    assert re.search(r"paddle\.grad\(loss, .*create_graph=not self\.first_order",
                     open(os.path.join(folder, "dygraph_model.py")).read())
    assert "class RecDataset(EpisodeDataset)" in open(os.path.join(folder, "omniglot_reader.py")).read()
    for config in ("config.yaml", "config_bigdata.yaml"):
        text = open(os.path.join(folder, config)).read()
        assert 'train_reader_path: "omniglot_reader"' in text, config


def test_no_source_file_is_over_300_lines():
    for path in python_files("models", "tools", "tests", "benchmarks", "datasets"):
        lines = len(open(path).read().splitlines())
        assert lines <= 300, f"{os.path.relpath(path, ROOT)} has {lines} lines"


TOY_MODEL = '''
"""A toy model written only against the interface: nearest class mean of
learned linear features (a prototypical network on raw pixels)."""
import paddle

from models.common.fewshot_model import FewShotModel
from models.lib.config import Option, positive
from models.lib.metrics import EpisodeAccuracy, accuracy

HYPER_PARAMETER_OPTIONS = [Option("features", int, 8, "feature width", (positive, "an integer >= 1")),
                           Option("learning_rate", float, 0.01, "Adam's rate", (positive, "a number > 0"))]


class DygraphModel(FewShotModel):
    def create_model(self, config):
        c, h, w = config["data"]["image_shape"]
        return paddle.nn.Linear(c * h * w, config["hyper_parameters"]["features"])

    def network_description(self, config):
        return {{"model": "toy", "features": config["hyper_parameters"]["features"]}}

    def create_optimizer(self, model, config):
        return paddle.optimizer.Adam(config["hyper_parameters"]["learning_rate"], parameters=model.parameters())

    def create_metrics(self, config, mode="train"):
        return [EpisodeAccuracy("acc")], ["acc"]

    def _logits(self, model, batch, config):
        xs, ys, xq, yq = self.create_feeds(batch, config)
        t, n = xs.shape[0], xs.shape[1] // config["hyper_parameters"]["k_spt"]
        fs, fq = model(xs.reshape([t, xs.shape[1], -1])), model(xq.reshape([t, xq.shape[1], -1]))
        one_hot = paddle.nn.functional.one_hot(ys, n).astype(fs.dtype)
        centroids = paddle.matmul(one_hot, fs, transpose_x=True) / one_hot.sum(axis=1).unsqueeze(-1)
        return -((fq.unsqueeze(2) - centroids.unsqueeze(1)) ** 2).sum(-1), yq

    def train_forward(self, model, metrics, batch, config):
        logits, yq = self._logits(model, batch, config)
        loss = paddle.nn.functional.cross_entropy(logits.reshape([-1, logits.shape[-1]]), yq.reshape([-1]))
        metrics[0].update(accuracy(logits.detach(), yq))
        return loss, metrics, {{"loss": loss}}

    def infer_forward(self, model, metrics, batch, config):
        with paddle.no_grad():
            logits, yq = self._logits(model, batch, config)
        metrics[0].update(accuracy(logits, yq))
        return metrics, {{}}
'''

TOY_CONFIG = '''
runner:
  train_data_dir: "{data}/train"
  train_reader_path: "{reader}"
  test_data_dir: "{data}/test"
  infer_reader_path: "{reader}"
  train_batch_size: 4
  train_batches_per_epoch: 3
  epochs: 2
  print_interval: 3
  model_save_path: "out"
  infer_load_path: "out"
  infer_end_epoch: 2
  infer_episodes: 8
  infer_batch_size: 4
hyper_parameters:
  features: 16
  n_way: 5
  k_spt: 1
  k_query: 2
  k_query_test: 2
'''


@pytest.mark.slow
def test_a_new_model_folder_trains_and_infers_with_the_shared_drivers(tmp_path):
    """A model folder outside the repository, written against the interface
    only: the drivers, the reader and models.common serve it unchanged."""
    folder = tmp_path / "toy"
    folder.mkdir()
    (folder / "dygraph_model.py").write_text(textwrap.dedent(TOY_MODEL.format(root=ROOT)))
    (folder / "config.yaml").write_text(TOY_CONFIG.format(data=SAMPLE_DATA,
                                                          reader=os.path.join(MODEL_DIR, "omniglot_reader")))
    out = {}
    for script in ("trainer.py", "infer.py"):
        result = subprocess.run([sys.executable, os.path.join(ROOT, "tools", script), "-m", "config.yaml"],
                                cwd=folder, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        out[script] = result.stdout
    assert "epoch: 1, batch_id: 3/3, loss: " in out["trainer.py"] and ", acc: " in out["trainer.py"]
    assert "epoch 1: 8 test episodes" in out["infer.py"] and "  acc: " in out["infer.py"]
    assert os.path.isfile(folder / "out" / "1" / "meta.json")


def test_every_model_readme_documents_its_keys():
    """Each model folder's README lists its hyper_parameters keys (MAML's are in
    its KEYS.md, checked by test_config.py)."""
    import importlib

    for folder in sorted(glob.glob(os.path.join(ROOT, "models", "multitask", "*", "dygraph_model.py"))):
        name = os.path.basename(os.path.dirname(folder))
        if name == "maml":
            continue
        module = importlib.import_module(f"models.multitask.{name}.dygraph_model")
        readme = open(os.path.join(os.path.dirname(folder), "README.md")).read()
        documented = set(re.findall(r"^\| `hyper_parameters\.([a-z0-9_.]+)` \|", readme, flags=re.M))
        assert documented == {o.name for o in module.HYPER_PARAMETER_OPTIONS}, name
