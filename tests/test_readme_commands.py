"""Every command the READMEs (and the models' RESULTS.md) give is checked: the
sample-data blocks run, the quick start's printed numbers match the ones
tools/README.md shows, and every other command is parsed against a fresh
clone (script, config, overrides, data and checkpoints it needs)."""
import os
import re
import shlex
import shutil
import subprocess
import sys

import pytest

from conftest import ROOT
from readme_commands import DOCUMENTS, check_command, command_blocks, sample_data_blocks, tracked_paths, words

SAMPLE_RUN_DOC = "tools/README.md"
NUMBER_LINE = re.compile(r"^\s*(acc\w*): ([\d.]+) \+- ([\d.]+) %\s*$")
BUDGET = ["-o", "runner.epochs=1", "-o", "runner.train_batches_per_epoch=2", "-o", "runner.infer_episodes=4",
          "-o", "runner.infer_start_epoch=0", "-o", "runner.infer_end_epoch=1", "-o", "runner.val_episodes=2"]


def problems_of(documents):
    tracked = tracked_paths()
    problems, checked = [], 0
    for document in documents:
        for block in command_blocks(document):
            trained = set()
            for command in block:
                problems += check_command(command, trained, tracked)
                checked += 1
    return problems, checked


def test_every_readme_command_works_on_a_fresh_clone():
    problems, checked = problems_of(DOCUMENTS)
    assert checked >= 80, f"only {checked} commands found in {DOCUMENTS}: is the parser broken?"
    assert not problems, "README commands a fresh clone cannot run:\n" + "\n".join(problems)


def test_the_check_catches_what_a_new_user_tripped_on(tmp_path):
    """Mutations of a good block: each is reported, naming the line."""
    good = ["python tools/trainer.py -m models/multitask/protonet/config.yaml",
            "python tools/infer.py -m models/multitask/protonet/config.yaml",
            "python tools/infer.py -m models/multitask/maml/config_bigdata.yaml "
            "-o runner.infer_load_path=weights/omniglot_5way1shot -o runner.infer_start_epoch=22 "
            "-o runner.infer_end_epoch=23"]
    bad = {"infer before any training": "python tools/infer.py -m models/multitask/classifier_baseline/"
                                        "config_bigdata.yaml -o runner.infer_start_epoch=19",
           "a config that is not there": "python tools/trainer.py -m models/multitask/maml/config_nope.yaml",
           "a key the model lacks": "python tools/trainer.py -m models/multitask/maml/config.yaml "
                                    "-o hyper_parameters.no_such_key=1",
           "a script that is not there": "python tools/train.py -m models/multitask/maml/config.yaml",
           "an epoch not shipped": "python tools/infer.py -m models/multitask/maml/config_bigdata.yaml "
                                   "-o runner.infer_load_path=weights/omniglot_5way1shot "
                                   "-o runner.infer_start_epoch=3 -o runner.infer_end_epoch=4",
           "a pytest marker pytest.ini lacks": "python -m pytest -q -m \"not quick\"",
           "a benchmark option that does not exist": "python benchmarks/bench_maml.py --fast"}
    document = tmp_path / "README.md"
    document.write_text("```\n" + "\n".join(good) + "\n```\n")
    assert problems_of([str(document)]) == ([], 3)
    for what, line in bad.items():
        document.write_text("Text.\n\n    " + "\n    ".join(good + [line]) + "\n")
        problems, _ = problems_of([str(document)])
        assert len(problems) == 1 and "line 6" in problems[0], (what, problems)


def sample_run_numbers(lines):
    """{name: (line number, mean, ci)} of the acc lines in the block under
    '### The sample run' of LINES."""
    start = next(i for i, line in enumerate(lines) if line.startswith("### The sample run"))
    numbers = {}
    for number, line in enumerate(lines[start:], start + 1):
        if line.startswith("#") and numbers:
            break
        match = NUMBER_LINE.match(line)
        if match:
            numbers[match[1]] = (number, float(match[2]), float(match[3]))
    return numbers


def stale_numbers(lines, printed):
    """The lines of the README's sample run that PRINTED (infer's output) moved
    outside of the README's confidence interval, each with its replacement."""
    shown = sample_run_numbers(lines)
    ran = {m[1]: (float(m[2]), float(m[3])) for m in map(NUMBER_LINE.match, printed.splitlines()) if m}
    assert set(shown) == set(ran), (sorted(shown), sorted(ran))
    return [f"{SAMPLE_RUN_DOC} line {line}: {name}: {mean:.2f} +- {ci:.2f} % shown, the run printed "
            f"{ran[name][0]:.2f} +- {ran[name][1]:.2f} %: update the line"
            for name, (line, mean, ci) in shown.items() if abs(ran[name][0] - mean) > ci]


def readme_lines():
    with open(os.path.join(ROOT, SAMPLE_RUN_DOC), encoding="utf-8") as f:
        return f.read().splitlines()


def test_a_sample_run_number_moved_outside_its_ci_is_named():
    lines = readme_lines()
    shown = sample_run_numbers(lines)
    assert len(shown) >= 2
    printed = "\n".join(f"  {name}: {mean:.2f} +- {ci:.2f} %" for name, (_, mean, ci) in shown.items())
    assert stale_numbers(lines, printed) == []
    name, (line, mean, ci) = next(iter(shown.items()))
    moved = printed.replace(f"{name}: {mean:.2f}", f"{name}: {mean + 1.5 * ci:.2f}")
    assert stale_numbers(lines, moved) == [f"{SAMPLE_RUN_DOC} line {line}: {name}: {mean:.2f} +- {ci:.2f} % shown, "
                                           f"the run printed {mean + 1.5 * ci:.2f} +- {ci:.2f} %: update the line"]


def fresh_copy(destination):
    """The files a clone has, without the shipped weights and runs (no sample block reads them)."""
    tracked = tracked_paths()
    for path in sorted(p for p in tracked if os.path.isfile(p)) if tracked else []:
        relative = os.path.relpath(path, ROOT)
        if re.search(r"(^|/)(weights|runs|results)/", relative):
            continue
        os.makedirs(os.path.join(destination, os.path.dirname(relative)), exist_ok=True)
        shutil.copy2(path, os.path.join(destination, relative))
    if not tracked:
        shutil.copytree(ROOT, destination, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns(".git", "weights", "runs", "output_model_*", "data"))
    return destination


def run_block(block, copy, extra=()):
    """Runs BLOCK's commands in COPY as the README gives them, plus EXTRA after
    each driver's options; returns the last command's stdout."""
    stdout = ""
    for command in block:
        tokens = words(command)
        if tokens[0] == "cd":
            continue
        cwd = os.path.join(copy, os.path.relpath(command.cwd, ROOT))
        args = [sys.executable] + tokens[1:] + (list(extra) if "tools/" in command.text else [])
        result = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=900)
        assert result.returncode == 0, f"{command} failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        stdout = result.stdout
    return stdout


def quick_start():
    return next(block for document, block in sample_data_blocks() if document == "README.md")


@pytest.mark.slow
def test_the_quick_start_prints_the_numbers_tools_readme_shows(tmp_path):
    """README.md's quick start, as written, on a fresh copy; its printed accuracies
    are the ones tools/README.md shows, within their printed CI."""
    printed = run_block(quick_start(), fresh_copy(tmp_path / "clone"))
    stale = stale_numbers(readme_lines(), printed)
    assert not stale, "\n".join(stale)


def other_sample_blocks():
    """The sample-data blocks of the model READMEs (tools/README.md's show the drivers'
    forms, the model folder, two processes, plots: test_drivers.py and test_distributed.py
    run those same commands; this module still parses them)."""
    seen = {tuple(shlex.join(words(c)) for c in quick_start())}
    blocks = []
    for document, block in sample_data_blocks():
        if document == "tools/README.md":
            continue
        key = tuple((os.path.relpath(c.cwd, ROOT), shlex.join(words(c))) for c in block)
        if tuple(k[1] for k in key) not in seen and key not in seen:
            seen.add(key)
            blocks.append(pytest.param(block, id=f"{document}:{block[0].line}"))
    return blocks


@pytest.mark.slow
@pytest.mark.parametrize("block", other_sample_blocks())
def test_every_sample_data_block_runs(tmp_path, block):
    """The other sample-data blocks, in their order (a trainer before the infer or
    the learner that reads its output), on a shorter budget."""
    run_block(block, fresh_copy(tmp_path / "clone"), BUDGET)


def test_the_top_readme_quotes_only_numbers_its_links_state():
    """README.md's table of what works links each number to the model README that
    states it (the one place, where tools/reproduce.py writes it); the number must
    be there, or the two have drifted apart."""
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        links = re.findall(r"\[(\d+\.\d+ ± \d+\.\d+ %)\]\(([^)#]+)", f.read())
    assert len(links) >= 10
    stale = []
    for number, target in links:
        with open(os.path.join(ROOT, target), encoding="utf-8") as f:
            if number not in f.read():
                stale.append(f"README.md: {number} is not in {target}")
    assert not stale, "\n".join(stale)
