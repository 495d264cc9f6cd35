"""Prepare FC100 (Oreshkin et al. 2018, "TADAM"): CIFAR-100 split by superclass,
12 / 4 / 4 superclasses = 60 / 20 / 20 classes of 600 images (32 x 32) each.

    python datasets/fc100/prepare.py --source DIR [--out DIR]

DIR (or $FC100_SOURCE) holds CIFAR-100's python version (cifar-100-python.tar.gz
from https://www.cs.toronto.edu/~kriz/cifar.html, extracted): DIR/cifar-100-python/
{train,test,meta} or those three files in DIR itself. Both of CIFAR-100's parts
are pooled (500 + 100 images per class). The superclasses of each split are
splits/*.txt (the split used by TADAM and MetaOptNet: superclasses 1-6, 9, 10,
15, 17-19 for training, 8, 11, 13, 16 for validation, 0, 7, 12, 14 for test),
written into the layout of datasets/imagesets.py under --out (default
datasets/fc100/data).
"""
import argparse
import os
import pickle
import sys

import numpy as np

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from datasets.imagesets import PrepareError, check_classes, read_split_file, run, write_split

HERE = os.path.dirname(os.path.abspath(__file__))

IMGSIZE = 32
WHAT = ("FC100: set FC100_SOURCE to the folder of CIFAR-100's python version "
        "(cifar-100-python/ with train, test and meta, from https://www.cs.toronto.edu/~kriz/cifar.html)")


def cifar_folder(source):
    for folder in (os.path.join(source, "cifar-100-python"), source):
        if all(os.path.isfile(os.path.join(folder, f)) for f in ("train", "test", "meta")):
            return folder
    raise PrepareError(f"{source or 'no source given'}: no cifar-100-python/ with train, test and meta. {WHAT}")


def unpickle(path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError) as e:
        raise PrepareError(f"{path} is not a CIFAR-100 python file ({type(e).__name__}: {e}); truncated?") from None


def load_cifar(folder):
    """(images uint8 [N, 32, 32, 3], fine labels [N], coarse labels [N], fine names, coarse names)."""
    meta = unpickle(os.path.join(folder, "meta"))
    try:
        fine_names = [n.decode() for n in meta[b"fine_label_names"]]
        coarse_names = [n.decode() for n in meta[b"coarse_label_names"]]
        parts = [unpickle(os.path.join(folder, part)) for part in ("train", "test")]
        data = np.concatenate([np.asarray(p[b"data"], dtype=np.uint8) for p in parts])
        fine = np.concatenate([np.asarray(p[b"fine_labels"]) for p in parts])
        coarse = np.concatenate([np.asarray(p[b"coarse_labels"]) for p in parts])
    except (KeyError, TypeError, ValueError) as e:
        raise PrepareError(f"{folder}: not CIFAR-100's python version ({type(e).__name__}: {e})") from None
    if data.ndim != 2 or data.shape[1] != 3 * IMGSIZE * IMGSIZE or len(fine) != len(data):
        raise PrepareError(f"{folder}: data is {list(data.shape)}, expected [N, 3072] with a label per row")
    images = data.reshape([-1, 3, IMGSIZE, IMGSIZE]).transpose([0, 2, 3, 1])
    return images, fine, coarse, fine_names, coarse_names


def build(source, images_per_class):
    folder = cifar_folder(source)

    def build_into(work):
        images, fine, coarse, fine_names, coarse_names = load_cifar(folder)
        superclass_of = {}
        for f, c in zip(fine.tolist(), coarse.tolist()):
            if superclass_of.setdefault(f, c) != c:
                raise PrepareError(f"{folder}: fine class {fine_names[f]} appears under two superclasses")
        counts = {}
        for split in ("train", "val", "test"):
            wanted = read_split_file(os.path.join(HERE, "splits", f"{split}.txt"))
            unknown = [name for name in wanted if name not in coarse_names]
            if unknown:
                raise PrepareError(f"{folder}/meta has no superclass {unknown[0]}; not CIFAR-100?")
            classes = [fine_names[f] for f in sorted(superclass_of) if coarse_names[superclass_of[f]] in wanted]
            found = {name: int((fine == fine_names.index(name)).sum()) for name in classes}
            check_classes(split, found, classes, images_per_class, folder)
            if len(classes) != 5 * len(wanted):
                raise PrepareError(f"{folder}: the {split} superclasses hold {len(classes)} classes, expected "
                                   f"{5 * len(wanted)}")
            counts[split] = write_split(os.path.join(work, split), [(c, images_per_class) for c in classes],
                                        lambda name: images[fine == fine_names.index(name)], IMGSIZE)
        return IMGSIZE, counts

    return build_into


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.environ.get("FC100_SOURCE", ""))
    parser.add_argument("--out", default=os.environ.get("FC100_DATA", os.path.join(HERE, "data")))
    parser.add_argument("--images-per-class", type=int, default=600, help="600 in the real set")
    args = parser.parse_args(argv)
    return run("FC100", args.source, args.out, WHAT, lambda: build(args.source, args.images_per_class))

if __name__ == "__main__":
    sys.exit(main())
