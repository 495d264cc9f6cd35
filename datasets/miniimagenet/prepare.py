"""Prepare miniImageNet (Vinyals et al. 2016, Ravi & Larochelle's split) for the
miniImageNet configs (called by run.sh).

    python datasets/miniimagenet/prepare.py --source DIR [--out DIR] [--images-per-class 600]

miniImageNet has no stable unauthenticated download: DIR (or $MINIIMAGENET_SOURCE)
is a copy the user holds, in either of the two distributions in use:
  - Ravi & Larochelle's: DIR/images/*.jpg (any size; resized here to 84 x 84 with
    area interpolation) and DIR/train.csv, val.csv, test.csv ("filename,label" rows);
  - the pickled caches of learn2learn-style loaders: DIR/mini-imagenet-cache-train.pkl,
    -validation.pkl, -test.pkl, each {"image_data": uint8 [N, 84, 84, 3],
    "class_dict": {wnid: [indices]}}.
The classes of each split must be those of splits/*.txt (64 / 16 / 20 wnids, fixed
and committed), each with 600 images. The images are decoded once into the layout
of datasets/imagesets.py under --out (default datasets/miniimagenet/data).
"""
import argparse
import csv
import os
import pickle
import re
import sys

import numpy as np

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from datasets.imagesets import PrepareError, check_classes, decode_images, read_split_file, run, write_split

HERE = os.path.dirname(os.path.abspath(__file__))

IMGSIZE = 84
SPLITS = {"train": ("train.csv", "mini-imagenet-cache-train.pkl"),
          "val": ("val.csv", "mini-imagenet-cache-validation.pkl"),
          "test": ("test.csv", "mini-imagenet-cache-test.pkl")}
WHAT = ("miniImageNet: set MINIIMAGENET_SOURCE to a folder holding either images/ with train.csv, val.csv "
        "and test.csv (Ravi & Larochelle) or mini-imagenet-cache-{train,validation,test}.pkl (learn2learn)")


def distribution(source):
    """'csv' or 'pickle', from the files SOURCE holds."""
    if not source or not os.path.isdir(source):
        raise PrepareError(f"{source or 'no source given'}: not a folder. {WHAT}")
    if all(os.path.isfile(os.path.join(source, csv_name)) for csv_name, _ in SPLITS.values()):
        if not os.path.isdir(os.path.join(source, "images")):
            raise PrepareError(f"{source} has train.csv, val.csv and test.csv but no images/ folder")
        return "csv"
    if all(os.path.isfile(os.path.join(source, pkl)) for _, pkl in SPLITS.values()):
        return "pickle"
    raise PrepareError(f"{source} holds neither distribution. {WHAT}")


RAVI_NAME = re.compile(r"(n\d{8})\d+\.jpg")  # <wnid><index>.jpg: the name carries the class


def read_csv_split(path, seen):
    """{wnid: [file names]} of one of Ravi & Larochelle's csv files, in file order.
    A file listed twice (here or in another split: SEEN, file name -> "csv line",
    grown here) or labelled with a class its name contradicts is refused: either
    would put one image in two classes or two splits."""
    classes = {}
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as e:
        raise PrepareError(f"{path} cannot be read ({e})") from None
    if not rows or [c.strip() for c in rows[0]] != ["filename", "label"]:
        raise PrepareError(f"{path}: expected the header 'filename,label'")
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != 2:
            raise PrepareError(f"{path} line {line}: a row is not 'filename,label': {row}")
        name, label = row
        named = RAVI_NAME.fullmatch(name)
        if named and named.group(1) != label:
            raise PrepareError(f"{path} line {line}: {name} is labelled {label}, but its name says {named.group(1)}")
        if name in seen:
            raise PrepareError(f"{path} line {line}: {name} is listed before, at {seen[name]}")
        seen[name] = f"{os.path.basename(path)} line {line}"
        classes.setdefault(label, []).append(name)
    return classes


def load_pickle(path):
    try:
        with open(path, "rb") as f:
            data = pickle.load(f)
        images, class_dict = data["image_data"], data["class_dict"]
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError, AttributeError) as e:
        raise PrepareError(f"{path} is not a miniImageNet cache ({type(e).__name__}: {e}); truncated download?") \
            from None
    if not (isinstance(images, np.ndarray) and images.dtype == np.uint8 and images.ndim == 4
            and images.shape[1:] == (IMGSIZE, IMGSIZE, 3)):
        raise PrepareError(f"{path}: image_data is not uint8 [N, {IMGSIZE}, {IMGSIZE}, 3]")
    indices = np.concatenate([np.asarray(v, dtype=np.int64).ravel() for v in class_dict.values()] or [[]])
    if len(indices) and (indices.min() < 0 or indices.max() >= len(images)):
        raise PrepareError(f"{path}: class_dict lists image indices outside 0..{len(images) - 1}")
    if len(np.unique(indices)) != len(indices):
        raise PrepareError(f"{path}: class_dict lists an image under two classes (or twice)")
    return images, class_dict


def build(source, images_per_class):
    kind = distribution(source)

    def build_into(work):
        counts, seen = {}, {}
        for split, (csv_name, pkl_name) in SPLITS.items():
            expected = read_split_file(os.path.join(HERE, "splits", f"{split}.txt"))
            if kind == "csv":
                where = os.path.join(source, csv_name)
                files = read_csv_split(where, seen)
                check_classes(split, {c: len(v) for c, v in files.items()}, expected, images_per_class, where)
                decode = lambda wnid: decode_images(os.path.join(source, "images"), files[wnid], IMGSIZE)  # noqa: E731
            else:
                where = os.path.join(source, pkl_name)
                images, class_dict = load_pickle(where)
                check_classes(split, {c: len(v) for c, v in class_dict.items()}, expected, images_per_class, where)
                decode = lambda wnid: images[np.asarray(class_dict[wnid])]  # noqa: E731
            counts[split] = write_split(os.path.join(work, split), [(c, images_per_class) for c in expected],
                                        decode, IMGSIZE)
        return IMGSIZE, counts

    return build_into


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.environ.get("MINIIMAGENET_SOURCE", ""))
    parser.add_argument("--out", default=os.environ.get("MINIIMAGENET_DATA", os.path.join(HERE, "data")))
    parser.add_argument("--images-per-class", type=int, default=600, help="600 in the real set")
    args = parser.parse_args(argv)
    return run("miniImageNet", args.source, args.out, WHAT, lambda: build(args.source, args.images_per_class))


if __name__ == "__main__":
    sys.exit(main())
