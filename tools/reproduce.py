"""Regenerate the results tables of the model READMEs from the shipped weights.

    python tools/reproduce.py                       # every model: evaluate, print the tables
    python tools/reproduce.py --models maml --rows "5-way 1-shot" --rows "first order, 5-way 1-shot"
    python tools/reproduce.py --write               # ... and put them into the READMEs (with --rows:
                                                    # only those rows of the table)
    python tools/reproduce.py --check               # exit 1 if a README's table differs

Each model folder lists its rows in results.yaml: the setting, the config, the
weights (a run folder relative to the config) and the epoch chosen by validation,
the metric reported and the paper's number. Every row is evaluated by tools/infer.py
exactly as its README says (600 test episodes, 95 % confidence interval); rows with
`both_tests: true` (MAML, Reptile) are evaluated twice: with a test episode's query
images together (transductive, batch norm on their joint statistics: MAML's test)
and each query image with the support set alone (non-transductive: the Reptile
paper's). A README holds its table between the lines
<!-- reproduce.py: begin --> and <!-- reproduce.py: end -->.
"""
import argparse
import glob
import json
import os
import subprocess
import sys

import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BEGIN, END = "<!-- reproduce.py: begin -->", "<!-- reproduce.py: end -->"
FIELDS = {"row", "config", "weights", "epoch", "metric", "paper", "training"}
OPTIONAL = {"both_tests", "overrides"}


def read_rows(folder):
    """The rows of FOLDER/results.yaml, each checked for its fields."""
    path = os.path.join(folder, "results.yaml")
    try:
        with open(path) as f:
            rows = yaml.safe_load(f) or []
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise SystemExit(f"error: {path}{where}: not valid YAML ({getattr(e, 'problem', None) or e}); "
                         f"quote a value that holds ': '") from None
    if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
        raise SystemExit(f"error: {path}: expected a list of rows (- row: ..., config: ...)")
    for i, row in enumerate(rows):
        missing, unknown = FIELDS - set(row), set(row) - FIELDS - OPTIONAL
        if missing or unknown:
            raise SystemExit(f"error: {path}: row {i + 1}: missing {sorted(missing)}, unknown {sorted(unknown)}")
    return rows


def infer_command(folder, row, queries_alone=False):
    config = os.path.relpath(os.path.join(folder, row["config"]), ROOT)
    epoch = row["epoch"]
    options = [f"runner.infer_load_path={row['weights']}", f"runner.infer_start_epoch={epoch}",
               f"runner.infer_end_epoch={epoch + 1}"] + list(row.get("overrides", []))
    if queries_alone:
        options.append("hyper_parameters.test_queries_one_at_a_time=True")
    return ["python", "tools/infer.py", "-m", config] + [a for o in options for a in ("-o", o)]


def evaluate(folder, row, queries_alone=False):
    """(mean, ci95) in % of the row's metric, from infer.py's results file."""
    command = infer_command(folder, row, queries_alone)
    result = subprocess.run([sys.executable] + command[1:], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no message"])[-1]
        raise SystemExit(f"error: {' '.join(command)} failed: {last}")
    path = os.path.join(folder, row["weights"], "infer_results.json")
    with open(path) as f:
        epochs = json.load(f)["epochs"]
    for record in epochs[str(row["epoch"])]:
        if record["metric"] == row["metric"]:
            return 100 * record["mean"], 100 * record["ci95"]
    raise SystemExit(f"error: {path} has no metric {row['metric']} for epoch {row['epoch']}")


def table(folder, rows, say=print):
    """The markdown table of ROWS, each evaluated now."""
    both = any(row.get("both_tests") for row in rows)
    ours = "ours: queries together (transductive) | ours: one query at a time" if both else "ours"
    header = f"| setting | paper | {ours} | training | epoch, weights |"
    lines = [header, "|" + " --- |" * (header.count("|") - 1)]
    for row in rows:
        say(f"  {row['row']}: {' '.join(infer_command(folder, row))}", flush=True)
        together = "%.2f ± %.2f %%" % evaluate(folder, row)
        cells = [row["row"], row["paper"], together]
        if both:
            cells.append("%.2f ± %.2f %%" % evaluate(folder, row, True) if row.get("both_tests") else "-")
        cells += [row["training"], f"{row['epoch']}, `{row['weights']}`"]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines) + "\n"


def replace_block(readme, text, only_rows=False, order=()):
    """README text with the block between BEGIN and END replaced by TEXT; with
    ONLY_ROWS, just the block's rows that TEXT has (by setting), others kept, the
    rows then in ORDER (the settings in results.yaml's order)."""
    if BEGIN not in readme or END not in readme:
        return None
    head, rest = readme.split(BEGIN, 1)
    block, tail = rest.split(END, 1)
    if only_rows and block.strip():
        lines = block.strip("\n").split("\n")
        for new in text.strip("\n").split("\n")[2:]:  # past the header and its rule
            setting = new.split(" | ")[0] + " | "
            found = [i for i, line in enumerate(lines) if line.startswith(setting)]
            if found:
                lines[found[0]] = new
            else:
                lines.append(new)
        rank = {setting: i for i, setting in enumerate(order)}
        rows = sorted(lines[2:], key=lambda line: rank.get(line.split(" | ")[0][2:], len(rank)))
        text = "\n".join(lines[:2] + rows) + "\n"
    return f"{head}{BEGIN}\n{text}{END}{tail}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="", help="comma-separated model folders (default: all with results.yaml)")
    parser.add_argument("--rows", action="append", default=[], metavar="ROW",
                        help="a row's setting, as results.yaml names it (repeatable; default: all)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="put the tables into the READMEs")
    mode.add_argument("--check", action="store_true", help="exit 1 if a README's table differs")
    args = parser.parse_args(argv)
    found = glob.glob(os.path.join(ROOT, "models", "multitask", "*", "results.yaml"))
    folders = sorted(os.path.dirname(p) for p in found)
    chosen = [m for m in args.models.split(",") if m]
    unknown = set(chosen) - {os.path.basename(f) for f in folders}
    if unknown:
        raise SystemExit(f"error: --models: no results.yaml in models/multitask/{sorted(unknown)[0]}")
    chosen_folders = [f for f in folders if not chosen or os.path.basename(f) in chosen]
    known = {r["row"] for f in chosen_folders for r in read_rows(f)}
    missing = [r for r in args.rows if r not in known]
    if missing:
        raise SystemExit(f"error: --rows: no row {missing[0]!r} in the chosen results.yaml files "
                         f"(rows: {', '.join(sorted(known))})")
    stale = []
    for folder in folders:
        name = os.path.basename(folder)
        if chosen and name not in chosen:
            continue
        rows = [r for r in read_rows(folder) if not args.rows or r["row"] in args.rows]
        if not rows:
            continue
        print(f"{name}:", flush=True)
        text = table(folder, rows)
        print(text, flush=True)
        if not (args.write or args.check):
            continue
        readme_path = os.path.join(folder, "README.md")
        readme = open(readme_path).read()
        updated = replace_block(readme, text, only_rows=bool(args.rows), order=[r["row"] for r in read_rows(folder)])
        if updated is None:
            raise SystemExit(f"error: {readme_path} has no {BEGIN} ... {END} block")
        if args.check and updated != readme:
            stale.append(readme_path)
        elif args.write and updated != readme:
            with open(readme_path, "w") as f:
                f.write(updated)
            print(f"updated {os.path.relpath(readme_path, ROOT)}")
    if stale:
        print("stale tables (run python tools/reproduce.py --write): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
