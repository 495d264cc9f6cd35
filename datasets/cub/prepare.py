"""Prepare CUB-200-2011 (Wah et al. 2011) with the common few-shot class split
(Chen et al. 2019, "A Closer Look at Few-shot Classification", write_CUB_filelist.py):
the 200 class folders in sorted order, class i in train if i % 2 == 0 (100
classes), val if i % 4 == 1 (50), test if i % 4 == 3 (50); every image of a class.

    python datasets/cub/prepare.py --source DIR [--out DIR]

DIR (or $CUB_SOURCE) is the extracted CUB_200_2011.tgz (DIR/CUB_200_2011/images/
or DIR/images/ holding 200 folders such as 001.Black_footed_Albatross, 11788
JPEG images in all). Images are resized to 84 x 84 (area interpolation, RGB;
ours: Chen et al. resize and crop at load time) into the layout of
datasets/imagesets.py under --out (default datasets/cub/data).
"""
import argparse
import os
import sys

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from datasets.imagesets import PrepareError, decode_images, run, write_split

HERE = os.path.dirname(os.path.abspath(__file__))

IMGSIZE = 84
CLASSES, IMAGES = 200, 11788
WHAT = ("CUB: set CUB_SOURCE to the folder of the extracted CUB_200_2011.tgz "
        "(CUB_200_2011/images/ with the 200 class folders)")


def images_folder(source):
    for folder in (os.path.join(source, "CUB_200_2011", "images"), os.path.join(source, "images")):
        if os.path.isdir(folder):
            return folder
    raise PrepareError(f"{source or 'no source given'}: no CUB_200_2011/images/ folder. {WHAT}")


def split_of(index):
    """Chen et al.'s rule on the sorted class index."""
    return "train" if index % 2 == 0 else "val" if index % 4 == 1 else "test"


def build(source, classes_expected, images_expected):
    folder = images_folder(source)

    def build_into(work):
        classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
        files = {c: sorted(f for f in os.listdir(os.path.join(folder, c)) if not f.startswith(".")) for c in classes}
        total = sum(len(v) for v in files.values())
        if len(classes) != classes_expected or total != images_expected:
            raise PrepareError(f"{folder} holds {len(classes)} class folders and {total} images, expected "
                               f"{classes_expected} and {images_expected}; incomplete or another version?")
        counts = {}
        for split in ("train", "val", "test"):
            chosen = [c for i, c in enumerate(classes) if split_of(i) == split]
            counts[split] = write_split(os.path.join(work, split), [(c, len(files[c])) for c in chosen],
                                        lambda c: decode_images(os.path.join(folder, c), files[c], IMGSIZE),
                                        IMGSIZE)
        return IMGSIZE, counts

    return build_into


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.environ.get("CUB_SOURCE", ""))
    parser.add_argument("--out", default=os.environ.get("CUB_DATA", os.path.join(HERE, "data")))
    parser.add_argument("--expect", type=int, nargs=2, default=[CLASSES, IMAGES], metavar=("CLASSES", "IMAGES"),
                        help="200 and 11788 in the real set")
    args = parser.parse_args(argv)
    return run("CUB", args.source, args.out, WHAT, lambda: build(args.source, *args.expect))

if __name__ == "__main__":
    sys.exit(main())
