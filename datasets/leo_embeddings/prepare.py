"""Prepare the embeddings the LEO authors published (deepmind/leo README:
http://storage.googleapis.com/leo-embeddings/embeddings.zip) for the LEO configs.

    python datasets/leo_embeddings/prepare.py --source ZIP_OR_DIR [--out DIR] [--examples-per-class 600]

ZIP_OR_DIR (or $LEO_EMBEDDINGS_SOURCE): embeddings.zip, or the folder it extracts
to (embeddings/). Taken: <dataset>/center/<split>_embeddings.pkl of miniImageNet
and tieredImageNet (a dataset whose three files are all missing is skipped; at
least one must be complete). Each file is read as the authors' data.py reads it
(models/common/readers/leo_embeddings_reader.py) and checked: 640-dimensional
vectors, 64 / 16 / 20 classes of exactly 600 (miniImageNet) and 351 / 97 / 160
classes of at least 600 (tieredImageNet). The files are copied unchanged into
--out (default datasets/leo_embeddings/data) with READY (the SHA-256 of each),
atomically; a second run that finds READY verified does nothing.
"""
import argparse
import os
import shutil
import sys
import tempfile
import zipfile

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from datasets.imagesets import PrepareError, install, ready, run, write_ready

HERE = os.path.dirname(os.path.abspath(__file__))

FORMAT = 1
SPLITS = ("train", "val", "test")
CLASSES = {"miniImageNet": (64, 16, 20), "tieredImageNet": (351, 97, 160)}
WHAT = ("LEO embeddings: set LEO_EMBEDDINGS_SOURCE to embeddings.zip (the LEO authors', "
        "http://storage.googleapis.com/leo-embeddings/embeddings.zip) or the embeddings/ folder it extracts to")


def member(dataset, split):
    return f"{dataset}/center/{split}_embeddings.pkl"


def source_files(source, scratch):
    """{relative path: local file} of the pickles SOURCE holds (a zip is extracted into SCRATCH)."""
    if os.path.isfile(source):
        try:
            with zipfile.ZipFile(source) as archive:
                names = {n.split("embeddings/", 1)[-1]: n for n in archive.namelist()}
                found = {}
                for dataset in CLASSES:
                    for split in SPLITS:
                        rel = member(dataset, split)
                        if rel in names:
                            found[rel] = archive.extract(names[rel], scratch)
                return found
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise PrepareError(f"{source}: not a readable zip ({e}); truncated? {WHAT}") from None
    folder = os.path.join(source, "embeddings") if os.path.isdir(os.path.join(source, "embeddings")) else source
    if not os.path.isdir(folder):
        raise PrepareError(f"{source}: no such file or folder. {WHAT}")
    return {member(d, s): os.path.join(folder, member(d, s)) for d in CLASSES for s in SPLITS
            if os.path.isfile(os.path.join(folder, member(d, s)))}


def check(path, rel, dataset, split, examples_per_class):
    """The file as the reader loads it: class count and examples per class."""
    from models.common.readers.leo_embeddings_reader import load_embeddings

    try:
        classes = load_embeddings(path, rel, 640)
    except ValueError as e:
        raise PrepareError(str(e)) from None
    expected = CLASSES[dataset][SPLITS.index(split)]
    if len(classes) != expected:
        raise PrepareError(f"{rel}: {len(classes)} classes, expected {expected}; another dataset or incomplete?")
    fewest = min(len(c) for c in classes)
    exact = dataset == "miniImageNet"
    if fewest < examples_per_class or (exact and max(len(c) for c in classes) != examples_per_class):
        raise PrepareError(f"{rel}: a class has {fewest} embeddings, expected "
                           f"{'exactly' if exact else 'at least'} {examples_per_class}; truncated?")
    return {"classes": len(classes), "examples": sum(len(c) for c in classes)}


def build(source, examples_per_class):
    def build_into(work):
        with tempfile.TemporaryDirectory(dir=work) as scratch:
            files = source_files(source, scratch)
            counts = {}
            for dataset in CLASSES:
                present = [s for s in SPLITS if member(dataset, s) in files]
                if not present:
                    continue
                if len(present) < len(SPLITS):
                    missing = [member(dataset, s) for s in SPLITS if s not in present][0]
                    raise PrepareError(f"{source}: {missing} is missing; incomplete?")
                for split in SPLITS:
                    rel = member(dataset, split)
                    counts[rel] = check(files[rel], rel, dataset, split, examples_per_class)
                    os.makedirs(os.path.dirname(os.path.join(work, rel)), exist_ok=True)
                    shutil.copyfile(files[rel], os.path.join(work, rel))
            if not counts:
                raise PrepareError(f"{source}: holds no <dataset>/center/<split>_embeddings.pkl. {WHAT}")
        write_ready(work, list(counts), format=FORMAT, dataset="LEO embeddings", counts=counts)
        print("LEO embeddings: " + ", ".join(f"{rel} {c['classes']} classes / {c['examples']} vectors"
                                             for rel, c in counts.items()))
    return build_into


def install_checked(out, name, build):
    """BUILD (which writes READY itself) into OUT, atomically, unless OUT is ready."""
    if ready(out, FORMAT):
        print(f"{name} are ready in {out}; nothing to do")
        return
    install(out, build)
    print(f"ready in {out}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.environ.get("LEO_EMBEDDINGS_SOURCE", ""))
    parser.add_argument("--out", default=os.environ.get("LEO_EMBEDDINGS_DATA", os.path.join(HERE, "data")))
    parser.add_argument("--examples-per-class", type=int, default=600, help="600 in the real files")
    args = parser.parse_args(argv)
    return run("LEO embeddings", args.source, args.out, WHAT, lambda: build(args.source, args.examples_per_class),
               prepare_into=install_checked)


if __name__ == "__main__":
    sys.exit(main())
