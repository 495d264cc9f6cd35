"""Prepare tieredImageNet (Ren et al. 2018): 351 / 97 / 160 classes of 84 x 84
images in 20 / 6 / 8 ImageNet categories.

    python datasets/tieredimagenet/prepare.py --source DIR [--out DIR]

DIR (or $TIEREDIMAGENET_SOURCE) holds, for each split in train, val, test, either
distribution in use:
  - Ren et al.'s: <split>_images_png.pkl (a list of PNG-encoded images) and
    <split>_labels.pkl ({"label_specific": [...], "label_specific_str": [...], ...});
  - the npz one of MetaOptNet and Meta-Baseline: <split>_images.npz ({"images": uint8
    [N, 84, 84, 3], BGR}) and <split>_labels.pkl ({"labels": [...]}).
The number of classes (351 / 97 / 160) and images (448695 / 124261 / 206209) of each
split is checked; the images are written class by class, RGB, into the layout of
datasets/imagesets.py under --out (default datasets/tieredimagenet/data).
"""
import argparse
import os
import pickle
import sys
import zipfile

import numpy as np

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from datasets.imagesets import PrepareError, run, write_split

HERE = os.path.dirname(os.path.abspath(__file__))

IMGSIZE = 84
EXPECTED = {"train": (351, 448695), "val": (97, 124261), "test": (160, 206209)}
WHAT = ("tieredImageNet: set TIEREDIMAGENET_SOURCE to a folder holding <split>_images_png.pkl or "
        "<split>_images.npz, and <split>_labels.pkl, for train, val and test")


def load_labels(path):
    """(integer label per image, {label: name})."""
    try:
        with open(path, "rb") as f:
            meta = pickle.load(f, encoding="latin1")
        labels = np.asarray(meta["label_specific"] if "label_specific" in meta else meta["labels"])
    except (OSError, EOFError, pickle.UnpicklingError, KeyError, TypeError, ValueError) as e:
        raise PrepareError(f"{path} is not a tieredImageNet label file ({type(e).__name__}: {e})") from None
    ids = sorted(set(labels.tolist()))
    names = meta.get("label_specific_str")
    if names is not None and len(names) == len(ids) and len(set(map(str, names))) == len(ids):
        return labels, {label: str(names[k]) for k, label in enumerate(ids)}
    return labels, {label: f"class_{label:04d}" for label in ids}


def load_images(source, split):
    """uint8 [N, 84, 84, 3] RGB, or a list of PNG bytes, and the file it came from."""
    npz = os.path.join(source, f"{split}_images.npz")
    png = os.path.join(source, f"{split}_images_png.pkl")
    if os.path.isfile(npz):
        try:
            images = np.load(npz)["images"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise PrepareError(f"{npz} is not a tieredImageNet image file ({type(e).__name__}: {e}); truncated?") \
                from None
        if images.dtype != np.uint8 or images.shape[1:] != (IMGSIZE, IMGSIZE, 3):
            raise PrepareError(f"{npz}: images are {images.dtype} {list(images.shape)}, expected uint8 [N, 84, 84, 3]")
        return images[..., ::-1], npz  # stored BGR (Meta-Baseline flips them too)
    if os.path.isfile(png):
        try:
            with open(png, "rb") as f:
                return pickle.load(f, encoding="latin1"), png
        except (OSError, EOFError, pickle.UnpicklingError, ValueError) as e:
            raise PrepareError(f"{png} is not a tieredImageNet image file ({type(e).__name__}: {e}); truncated?") \
                from None
    raise PrepareError(f"{source} has neither {split}_images.npz nor {split}_images_png.pkl. {WHAT}")


def decode_png(data, where):
    import cv2

    image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if image is None or image.shape != (IMGSIZE, IMGSIZE, 3):
        raise PrepareError(f"{where}: an image is not an 84 x 84 PNG")
    return image[:, :, ::-1]


def build(source, expected):
    if not source or not os.path.isdir(source):
        raise PrepareError(f"{source or 'no source given'}: not a folder. {WHAT}")

    def build_into(work):
        counts = {}
        for split, (n_classes, n_images) in expected.items():
            labels, names = load_labels(os.path.join(source, f"{split}_labels.pkl"))
            images, where = load_images(source, split)
            if len(images) != len(labels) or len(names) != n_classes or len(labels) != n_images:
                raise PrepareError(f"{where}: {len(images)} images, {len(labels)} labels of {len(names)} classes; "
                                   f"expected {n_images} images of {n_classes} classes; incomplete?")
            members = {label: np.flatnonzero(labels == label) for label in names}

            label_of = {name: label for label, name in names.items()}

            def decode(name, members=members, images=images, where=where, label_of=label_of):
                label = label_of[name]
                if isinstance(images, np.ndarray):
                    return images[members[label]]
                return np.stack([decode_png(images[i], where) for i in members[label]])

            counts[split] = write_split(os.path.join(work, split),
                                        [(names[label], len(members[label])) for label in sorted(names)],
                                        decode, IMGSIZE)
        return IMGSIZE, counts

    return build_into


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.environ.get("TIEREDIMAGENET_SOURCE", ""))
    parser.add_argument("--out", default=os.environ.get("TIEREDIMAGENET_DATA", os.path.join(HERE, "data")))
    parser.add_argument("--expect", nargs=6, type=int, metavar="N",
                        help="classes and images of train, val, test (the real set's by default)")
    args = parser.parse_args(argv)
    expected = EXPECTED if args.expect is None else {
        split: tuple(args.expect[2 * i: 2 * i + 2]) for i, split in enumerate(EXPECTED)}
    return run("tieredImageNet", args.source, args.out, WHAT, lambda: build(args.source, expected))

if __name__ == "__main__":
    sys.exit(main())
