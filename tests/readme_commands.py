"""The commands the READMEs tell a reader to run, found and checked without running them.

A command is a line of a fenced or indented code block that starts with python, sh, cd,
pip or bash (after VAR=value prefixes); a line ending in a backslash continues on the
next. Consecutive command lines form a block: a `cd` changes the folder of the lines
after it, and an infer may read what a trainer above it in the same block wrote.

check_command says, for one command, what a reader on a fresh clone would trip on:
a script, config, override, folder or checkpoint that is not there. Paths count as
there when git tracks them (a fresh clone has them), or, for data, when the data
set's datasets/<name>/run.sh prepares them."""
import glob
import os
import re
import shlex
import subprocess

from conftest import ROOT

MODEL_DOCUMENTS = glob.glob(os.path.join(ROOT, "models", "multitask", "*", "*.md"))
DOCUMENTS = (["README.md", "tools/README.md", "benchmarks/README.md"]
             + sorted(os.path.relpath(p, ROOT) for p in MODEL_DOCUMENTS
                      if os.path.basename(p) in ("README.md", "RESULTS.md")))
COMMAND = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S*\s+)*(python|sh|cd|pip|bash)\s")
# Words a README puts where the reader fills in a value of their own.
PLACEHOLDER = re.compile(r"^(DIR|RUN|CONFIG|E|E\+1|N|PATH|\.\.\.)$|<[^>]*>|\.\.\.")
DRIVERS = ("tools/trainer.py", "tools/infer.py", "tools/plot.py")
LAUNCHER_OPTIONS = {"--nproc_per_node", "--log_dir", "--gpus", "--devices"}


class Command:
    def __init__(self, document, line, text, cwd):
        self.document, self.line, self.text, self.cwd = document, line, text, cwd

    def __repr__(self):
        return f"{self.document}:{self.line}: {self.text}"


def command_blocks(document):
    """[[Command, ...], ...]: the runs of command lines in DOCUMENT's code blocks."""
    blocks, block, fenced, pending = [], [], False, None
    with open(os.path.join(ROOT, document), encoding="utf-8") as f:
        lines = f.read().splitlines()
    for number, raw in enumerate(lines, 1):
        if raw.lstrip().startswith("```"):
            fenced = not fenced
            blocks, block = _close(blocks, block)
            continue
        in_code = fenced or raw.startswith("    ")
        text = raw.strip()
        if pending:
            start, before = pending
            text, pending = before + " " + text, None
            number = start
        if in_code and text.endswith("\\"):
            pending = (number, text[:-1].rstrip())
            continue
        if in_code and text.startswith("#"):  # a comment line inside a block
            continue
        if in_code and COMMAND.match(text + " "):
            cwd = block[-1].cwd if block else ROOT
            if block and block[-1].text.startswith("cd "):
                cwd = os.path.normpath(os.path.join(block[-1].cwd, shlex.split(block[-1].text)[1]))
            block.append(Command(document, number, text, cwd))
        elif text:
            blocks, block = _close(blocks, block)
    return _close(blocks, block)[0]


def _close(blocks, block):
    return (blocks + [block] if block else blocks), []


def tracked_paths():
    """Every path git tracks (files and their folders), absolute; None outside a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    paths = set()
    for name in out.decode().split("\0"):
        while name:
            paths.add(os.path.join(ROOT, name))
            name = os.path.dirname(name)
    return paths


def in_fresh_clone(path, tracked):
    path = os.path.normpath(path)
    return os.path.exists(path) if tracked is None else path in tracked


def prepared_by(path):
    """datasets/<name>/run.sh when PATH lies in that data set's prepared folder, else None."""
    relative = os.path.relpath(path, ROOT).split(os.sep)
    if len(relative) >= 3 and relative[0] == "datasets" and relative[2] == "data":
        script = os.path.join(ROOT, "datasets", relative[1], "run.sh")
        return script if os.path.isfile(script) else None
    return None


def words(command):
    """The command's words after VAR=value prefixes, comments removed."""
    tokens = shlex.split(command.text, comments=True)
    while tokens and re.match(r"^[A-Z_][A-Z0-9_]*=", tokens[0]):
        tokens.pop(0)
    return tokens


def check_command(command, trained, tracked):
    """Problems (strings) of COMMAND; TRAINED: checkpoint folders written by the
    commands above it in its block (grows with this command's own output)."""
    tokens = words(command)
    where = f"{command.document} line {command.line}"
    program, args = tokens[0], tokens[1:]
    if program == "cd":
        target = os.path.join(command.cwd, args[0])
        return [] if os.path.isdir(target) else [f"{where}: cd {args[0]}: no such folder"]
    if program in ("pip",):
        return []
    if program in ("sh", "bash"):
        return _exists(where, os.path.join(command.cwd, args[0]), tracked)
    if args[:2] == ["-m", "pytest"]:
        return _check_pytest(where, args[2:])
    if args[:2] == ["-m", "paddle.distributed.launch"]:
        args = _without_launcher_options(args[2:])
    script, options = args[0], args[1:]
    problems = _exists(where, os.path.join(command.cwd, script), tracked)
    if problems:
        return problems
    relative_script = os.path.relpath(os.path.normpath(os.path.join(command.cwd, script)), ROOT)
    if relative_script not in DRIVERS:
        with open(os.path.join(ROOT, relative_script), encoding="utf-8") as f:
            source = f.read()
        return [f"{where}: {script} has no option {o}" for o in options
                if o.startswith("--") and f'"{o}"' not in source]
    return _check_driver(where, command.cwd, relative_script, options, trained, tracked)


def _exists(where, path, tracked):
    return [] if in_fresh_clone(path, tracked) else [f"{where}: {os.path.relpath(path, ROOT)} is not in the repository"]


def _without_launcher_options(args):
    rest = list(args)
    while rest and rest[0].startswith("--"):
        option = rest.pop(0)
        if option in LAUNCHER_OPTIONS and "=" not in option:
            rest.pop(0)
    return rest


def _check_pytest(where, args):
    with open(os.path.join(ROOT, "pytest.ini"), encoding="utf-8") as f:
        ini = f.read()
    problems = []
    for i, arg in enumerate(args):
        if args[i - 1:i] == ["-m"]:
            for marker in re.findall(r"[a-z_]+", arg.replace("not", " ").replace("and", " ").replace("or", " ")):
                if f"{marker}:" not in ini:
                    problems.append(f"{where}: pytest marker {marker} is not in pytest.ini")
        elif not arg.startswith("-") and args[i - 1:i] not in (["-m"], ["-n"]) and not os.path.exists(
                os.path.join(ROOT, arg.split("::")[0])):
            problems.append(f"{where}: {arg} does not exist")
    return problems


def _check_driver(where, cwd, script, options, trained, tracked):
    from models.lib.config import ConfigError
    from tools.utils import cli, runtime

    if script == "tools/plot.py":
        options = [o for i, o in enumerate(options) if o != "--out" and options[i - 1:i] != ["--out"]]
    try:
        args = cli.parse_args("", options)
    except SystemExit:
        return [f"{where}: {script} does not take these arguments: {shlex.join(options)}"]
    fillers = [o for o in args.opt if PLACEHOLDER.search(o.split("=", 1)[-1])]
    overrides = [o for o in args.opt if o not in fillers]
    config_path = os.path.join(cwd, args.config_yaml)
    if not in_fresh_clone(config_path, tracked):
        return [f"{where}: config {args.config_yaml} is not in the repository"]
    try:
        config, _ = runtime.resolve_config(config_path, overrides, warn=lambda message: None)
    except (ConfigError, ValueError) as error:
        return [f"{where}: {error}"]
    runner = config["runner"]
    problems = []
    for key in ("train_data_dir", "test_data_dir", "val_data_dir"):
        path = runner.get(key)
        if path and not (in_fresh_clone(path, tracked) or prepared_by(path)):
            problems.append(f"{where}: runner.{key} = {os.path.relpath(path, ROOT)}: not in the repository "
                            f"and no datasets/<name>/run.sh prepares it")
    if script == "tools/trainer.py":
        trained.add(os.path.normpath(runner["model_save_path"]))
    elif script == "tools/plot.py":
        log = os.path.join(runner["model_save_path"], "train_log.jsonl")
        if os.path.normpath(runner["model_save_path"]) not in trained and not in_fresh_clone(log, tracked):
            problems.append(f"{where}: plot reads {os.path.relpath(log, ROOT)}, which a fresh clone does not have "
                            f"and no trainer above it in the block writes")
    elif not any(o.startswith("runner.infer_load_path=") for o in fillers):
        problems += _check_checkpoints(where, runner, trained, tracked)
    return problems


def _check_checkpoints(where, runner, trained, tracked):
    """An infer reads checkpoints a trainer above it wrote, or ones the repository ships."""
    load_path = os.path.normpath(runner["infer_load_path"])
    if load_path in trained:
        return []
    relative = os.path.relpath(load_path, ROOT)
    epochs = range(runner["infer_start_epoch"], runner["infer_end_epoch"])
    found = [e for e in epochs if in_fresh_clone(os.path.join(load_path, str(e)), tracked)]
    if not found:
        return [f"{where}: infer reads epochs {epochs.start}..{epochs.stop - 1} of {relative}, which a fresh "
                f"clone does not have and no trainer above it in the block writes"]
    if (runner.get("infer_best_epoch") or runner.get("infer_ensemble_top")) and not in_fresh_clone(
            os.path.join(load_path, "train_log.jsonl"), tracked):
        return [f"{where}: choosing an epoch by validation needs {relative}/train_log.jsonl"]
    return []


def sample_data_blocks():
    """(document, [Command, ...]) for every block that starts with commands on the
    bundled sample data (config.yaml): those commands, up to the first other one."""
    found = []
    for document in DOCUMENTS:
        for block in command_blocks(document):
            prefix = []
            for command in block:
                sample = re.search(r"\btools/\w+\.py -m (\S*/)?config\.yaml(\s|$)", command.text)
                if not (sample or command.text.startswith("cd ")):
                    break
                prefix.append(command)
            if any("tools/" in c.text for c in prefix):
                found.append((document, prefix))
    return found
