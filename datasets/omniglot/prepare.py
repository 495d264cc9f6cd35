"""Prepare full Omniglot for the bigdata configs (called by run.sh).

    python datasets/omniglot/prepare.py [--source DIR] [--out DIR]

Takes images_background.zip and images_evaluation.zip from --source (or
$OMNIGLOT_SOURCE), or downloads them from the official repository, verifies
them, decodes every PNG once into 28x28 uint8 arrays (strokes = 255) and
writes, under --out (default datasets/omniglot/data):
    paper/{train,val,test}/  the MAML paper's split (1100 / 100 / 423 characters,
                             fixed lists in splits/paper_*.txt)
    lake/{train,test}/       Lake et al.'s background / evaluation split (964 / 659)
each holding images.npy [characters, 20, 28, 28] (area interpolation: grey
levels at the stroke edges), images_nearest.npy (the same drawings resized with
nearest neighbour: binary, what the MAML authors' PIL resize of the 1-bit PNGs
gives) and characters.txt, and READY (format version and the SHA-256 of every file). Everything is built in a temporary folder that is
renamed into place at the end, so an interrupted run never leaves data that
looks complete; a second run verifies READY and does nothing.
"""
import argparse
import errno
import json
import os
import random
import shutil
import signal
import sys
import urllib.request
import zipfile

import numpy as np

if not __package__:  # run as a script: make the project root importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from datasets import imagesets  # (datasets/imagesets.py: hashing, READY, the atomic install)
from datasets.imagesets import PrepareError, Terminated, file_hash, sigterm_as_interrupt

HERE = os.path.dirname(os.path.abspath(__file__))
ZIPS = {  # name: (MD5 of the official archive, characters, alphabets)
    "images_background.zip": ("68d2efa1b9178cc56df9314c21c6e718", 964, 30),
    "images_evaluation.zip": ("6b91aef0f799c5bb55b94e3f2daec811", 659, 20),
}
URL = os.environ.get("OMNIGLOT_URL",
                     "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/")
DRAWINGS = 20
IMGSIZE = 28
PAPER_SPLIT = {"train": 1100, "val": 100, "test": 423}  # 1200 meta-training = train + val
FORMAT = 2  # 2: images_nearest.npy added; an older preparation is rebuilt
ARRAYS = {"images.npy": "INTER_AREA", "images_nearest.npy": "INTER_NEAREST_EXACT"}


def character_pngs(zip_path):
    """{'alphabet/characterNN': [png member names]} of one archive; PrepareError if unreadable."""
    try:
        with zipfile.ZipFile(zip_path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise PrepareError(f"{zip_path} is corrupt (bad CRC in {bad})")
            names = archive.namelist()
    except (zipfile.BadZipFile, EOFError) as e:
        raise PrepareError(f"{zip_path} is not a valid zip archive ({e}); truncated download?") from None
    characters = {}
    for name in names:
        parts = name.split("/")
        if len(parts) == 4 and parts[3].endswith(".png"):
            characters.setdefault(f"{parts[1]}/{parts[2]}", []).append(name)
    return characters


def verify_zip(path, name, source_dir):
    """Official MD5, or the checksum listed beside it in SHA256SUMS, or (repacked
    archives) the expected content: characters x 20 drawings."""
    md5, n_characters, _ = ZIPS[name]
    if file_hash(path, "md5") == md5:
        return
    sums = os.path.join(source_dir, "SHA256SUMS") if source_dir else None
    if sums and os.path.isfile(sums):
        listed = dict(reversed(line.split()) for line in open(sums) if len(line.split()) == 2)
        if name in listed:
            if file_hash(path, "sha256") != listed[name]:
                raise PrepareError(f"{path}: SHA-256 does not match {sums}")
            return
    if not source_dir:
        raise PrepareError(f"{path}: MD5 is not the official {md5}; the download is damaged")
    characters = character_pngs(path)
    counts = {len(v) for v in characters.values()}
    if len(characters) != n_characters or counts != {DRAWINGS}:
        raise PrepareError(f"{path}: expected {n_characters} characters with {DRAWINGS} drawings each, "
                           f"found {len(characters)} characters; not the Omniglot {name}")


def fetch(name, source_dir, work):
    target = os.path.join(work, name)
    if source_dir:
        path = os.path.join(source_dir, name)
        if not os.path.isfile(path):
            raise PrepareError(f"OMNIGLOT_SOURCE: {path} not found")
        shutil.copyfile(path, target)
    else:
        try:
            with urllib.request.urlopen(URL + name, timeout=60) as response, open(target, "wb") as f:
                shutil.copyfileobj(response, f)
        except OSError as e:
            if getattr(e, "errno", None) == errno.ENOSPC:
                raise
            raise PrepareError(f"cannot download {URL + name} ({e}); no network? Set OMNIGLOT_SOURCE=DIR "
                               f"to a folder holding the two zips") from None
    verify_zip(target, name, source_dir)
    return target


def decode(zip_path):
    """(ids, {array file: uint8 [characters, 20, 28, 28]}) of one archive, sorted by
    id: each drawing resized with each interpolation of ARRAYS. INTER_NEAREST_EXACT
    equals PIL's resize of these 1-bit PNGs (Pillow resamples mode "1" images with
    NEAREST whatever is asked, so the authors' LANCZOS resize is nearest in effect)."""
    import cv2

    characters = character_pngs(zip_path)
    ids = sorted(characters)
    arrays = {name: np.zeros([len(ids), DRAWINGS, IMGSIZE, IMGSIZE], dtype="uint8") for name in ARRAYS}
    with zipfile.ZipFile(zip_path) as archive:
        for i, cid in enumerate(ids):
            for j, member in enumerate(sorted(characters[cid])[:DRAWINGS]):
                raw = np.frombuffer(archive.read(member), dtype="uint8")
                image = cv2.imdecode(raw, cv2.IMREAD_GRAYSCALE)
                if image is None:
                    raise PrepareError(f"{zip_path}: {member} is not a readable PNG")
                for name, interpolation in ARRAYS.items():
                    arrays[name][i, j] = 255 - cv2.resize(image, (IMGSIZE, IMGSIZE),
                                                          interpolation=getattr(cv2, interpolation))
    return ids, arrays


def paper_split(all_ids):
    """The fixed split: sorted ids shuffled with seed 1 (as the authors' code
    does with its folder list), then 1100 train, 100 val, 423 test."""
    ids = sorted(all_ids)
    random.Random(1).shuffle(ids)
    a, b = PAPER_SPLIT["train"], PAPER_SPLIT["train"] + PAPER_SPLIT["val"]
    return {"train": sorted(ids[:a]), "val": sorted(ids[a:b]), "test": sorted(ids[b:])}


def read_split_file(split):
    path = os.path.join(HERE, "splits", f"paper_{split}.txt")
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def write_split(folder, ids, index, arrays):
    os.makedirs(folder)
    for name, images in arrays.items():
        np.save(os.path.join(folder, name), images[[index[c] for c in ids]])
    with open(os.path.join(folder, "characters.txt"), "w") as f:
        f.write("\n".join(ids) + "\n")


def ready(out):
    """True if OUT holds a complete, verified preparation of this FORMAT."""
    return imagesets.ready(out, FORMAT)


def prepare(source_dir, out):
    if ready(out):
        print(f"Omniglot is ready in {out}; nothing to do")
        return
    print(f"preparing Omniglot in {out} from {source_dir or URL}", flush=True)
    imagesets.install(out, lambda work: build(source_dir, work))
    with open(os.path.join(out, "READY")) as f:
        counts = json.load(f)["counts"]
    print(f"Omniglot ready in {out}: " + ", ".join(f"{rel} {n}" for rel, n in counts.items()))


def build(source_dir, work):
    """Fetch, verify, decode and write every split into WORK, READY last."""
    ids, decoded, origin = [], [], {}
    for name in ZIPS:
        zip_path = fetch(name, source_dir, work)
        zip_ids, zip_arrays = decode(zip_path)
        origin[name] = zip_ids
        ids += zip_ids
        decoded.append(zip_arrays)
        os.remove(zip_path)
    arrays = {name: np.concatenate([d[name] for d in decoded]) for name in ARRAYS}
    index = {cid: i for i, cid in enumerate(ids)}
    splits = {f"paper/{s}": read_split_file(s) for s in PAPER_SPLIT}
    if sorted(sum(splits.values(), [])) != sorted(ids):
        raise PrepareError("splits/paper_*.txt do not cover the 1623 characters of the archives exactly")
    splits["lake/train"] = origin["images_background.zip"]
    splits["lake/test"] = origin["images_evaluation.zip"]
    for rel, split_ids in splits.items():
        write_split(os.path.join(work, rel), split_ids, index, arrays)
    imagesets.write_ready(work, [f"{rel}/{name}" for rel in splits for name in list(ARRAYS) + ["characters.txt"]],
                          format=FORMAT, characters=len(ids), imgsize=IMGSIZE,
                          counts={rel: len(v) for rel, v in splits.items()})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=os.environ.get("OMNIGLOT_SOURCE") or None,
                        help="folder holding the two zips (default: $OMNIGLOT_SOURCE, else download)")
    parser.add_argument("--out", default=os.environ.get("OMNIGLOT_DATA") or os.path.join(HERE, "data"))
    parser.add_argument("--make-splits", action="store_true",
                        help="(maintainers) rewrite splits/paper_*.txt from the archives")
    args = parser.parse_args(argv)
    previous = sigterm_as_interrupt()
    try:
        if args.make_splits:
            ids = sum((sorted(character_pngs(os.path.join(args.source, n))) for n in ZIPS), [])
            for split, split_ids in paper_split(ids).items():
                with open(os.path.join(HERE, "splits", f"paper_{split}.txt"), "w") as f:
                    f.write("\n".join(split_ids) + "\n")
            return 0
        prepare(os.path.abspath(args.source) if args.source else None, os.path.abspath(args.out))
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        reason = "disk full" if e.errno == errno.ENOSPC else e.strerror or str(e)
        print(f"error: {reason}: {getattr(e, 'filename', '') or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:
        print(f"interrupted; {args.out} is as it was (the temporary folder is removed)", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


if __name__ == "__main__":
    sys.exit(main())
