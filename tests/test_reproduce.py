"""tools/reproduce.py: every results.yaml row names a config that loads and a committed
checkpoint of the epoch it reports, every README with rows has the block the tool
rewrites, and one row evaluated now gives the number its README shows."""
import glob
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT, SHARED_OMNIGLOT
from tools import reproduce
from tools.utils import runtime

FOLDERS = sorted(os.path.dirname(p) for p in glob.glob(os.path.join(ROOT, "models", "multitask", "*", "results.yaml")))


def test_every_shipped_model_has_rows():
    shipped = {os.path.basename(os.path.dirname(os.path.dirname(p)))
               for p in glob.glob(os.path.join(ROOT, "models", "multitask", "*", "weights", "*"))}
    assert shipped <= {os.path.basename(f) for f in FOLDERS}


@pytest.mark.parametrize("folder", FOLDERS, ids=os.path.basename)
def test_each_row_names_a_loadable_config_and_a_committed_checkpoint(folder):
    rows = reproduce.read_rows(folder)
    assert rows
    for row in rows:
        config, _ = runtime.resolve_config(os.path.join(folder, row["config"]), list(row.get("overrides", [])),
                                           warn=lambda message: None)
        epoch_dir = os.path.join(folder, row["weights"], str(row["epoch"]))
        assert os.path.isfile(os.path.join(epoch_dir, "rec.pdparams")), epoch_dir
        readme = open(os.path.join(folder, "README.md")).read()
        assert reproduce.BEGIN in readme and reproduce.END in readme, folder
        assert f"| {row['row']} |" in readme, f"{folder}: README has no row {row['row']!r}"


def test_a_row_missing_a_field_is_named(tmp_path):
    (tmp_path / "results.yaml").write_text("- row: x\n  config: c.yaml\n")
    with pytest.raises(SystemExit, match=r"results.yaml: row 1: missing \['epoch', 'metric', 'paper', 'training', "
                                         r"'weights'\]"):
        reproduce.read_rows(str(tmp_path))


def test_a_results_file_that_is_not_yaml_is_one_line(tmp_path):
    (tmp_path / "results.yaml").write_text("- row: a\n  training: 3 h wall: one thread\n")
    with pytest.raises(SystemExit, match=r"results.yaml line 2: not valid YAML .*quote a value"):
        reproduce.read_rows(str(tmp_path))


def test_the_block_is_replaced_and_nothing_else():
    text = f"intro\n{reproduce.BEGIN}\nold table\n{reproduce.END}\noutro\n"
    assert reproduce.replace_block(text, "| new |\n") == f"intro\n{reproduce.BEGIN}\n| new |\n{reproduce.END}\noutro\n"
    assert reproduce.replace_block("no block", "x") is None
    table = "| setting | ours |\n| --- | --- |\n| a | 1 |\n| b | 2 |\n"
    text = f"{reproduce.BEGIN}\n{table}{reproduce.END}\n"
    one = reproduce.replace_block(text, "| setting | ours |\n| --- | --- |\n| b | 3 |\n| c | 4 |\n", only_rows=True,
                                  order=["a", "c", "b"])
    rows = "| a | 1 |\n| c | 4 |\n| b | 3 |\n"
    assert one == f"{reproduce.BEGIN}\n| setting | ours |\n| --- | --- |\n{rows}{reproduce.END}\n"


@pytest.mark.slow
@pytest.mark.parametrize("folder", FOLDERS, ids=os.path.basename)
def test_a_row_of_each_model_evaluated_now_gives_the_number_its_readme_shows(folder):
    """The README's way, for the first row of every model's table: full Omniglot prepared
    by datasets/omniglot/run.sh (from the local copy of the official zips when there is
    one), then the row evaluated from the committed weights on all its test episodes."""
    if not os.path.isfile(os.path.join(ROOT, "datasets", "omniglot", "data", "READY")):
        if not os.path.isdir(SHARED_OMNIGLOT):
            pytest.skip("full Omniglot is not prepared and no local copy of its zips is at hand")
        prepared = subprocess.run(["sh", "datasets/omniglot/run.sh"], cwd=ROOT, capture_output=True, text=True,
                                  env=dict(os.environ, OMNIGLOT_SOURCE=SHARED_OMNIGLOT), timeout=900)
        assert prepared.returncode == 0, prepared.stderr
    model, row = os.path.basename(folder), reproduce.read_rows(folder)[0]["row"]
    result = subprocess.run([sys.executable, "tools/reproduce.py", "--models", model, "--rows", row],
                            cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr
    now = re.search(rf"^\| {re.escape(row)} \|.*$", result.stdout, flags=re.M).group(0)
    readme = open(os.path.join(folder, "README.md")).read()
    assert now in readme, f"README's row is stale; python tools/reproduce.py --models {model} --write gives\n{now}"
