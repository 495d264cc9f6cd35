"""Rebuild models/multitask/maml/data/sample_data from the two Omniglot zips.

    python datasets/omniglot/make_sample_data.py ZIP_DIR

train/: the first 4 characters of every third background alphabet (40 characters),
test/:  the first 3 characters of every second evaluation alphabet (30 characters),
all 20 drawings each, the PNG files byte for byte. Deterministic.
"""
import os
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "models", "multitask", "maml", "data", "sample_data")
PLAN = {"train": ("images_background.zip", 3, 4), "test": ("images_evaluation.zip", 2, 3)}


def main(zip_dir):
    for split, (zip_name, alphabet_stride, per_alphabet) in PLAN.items():
        with zipfile.ZipFile(os.path.join(zip_dir, zip_name)) as archive:
            pngs = [n for n in archive.namelist() if n.endswith(".png")]
            tree = {}
            for name in pngs:
                _, alphabet, character, _ = name.split("/")
                tree.setdefault(alphabet, {}).setdefault(character, []).append(name)
            for alphabet in sorted(tree)[::alphabet_stride]:
                for character in sorted(tree[alphabet])[:per_alphabet]:
                    folder = os.path.join(OUT, split, alphabet, character)
                    os.makedirs(folder, exist_ok=True)
                    for name in sorted(tree[alphabet][character]):
                        with open(os.path.join(folder, os.path.basename(name)), "wb") as f:
                            f.write(archive.read(name))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(ROOT), "shared", "omniglot"))
