"""What the RGB few-shot sets share once decoded (miniImageNet today; tieredImageNet,
FC100 and CUB follow the same layout): the prepared folder the episode reader
models/common/readers/image_classes_reader.py memory-maps.

    OUT/<split>/images.npy   uint8 [images, S, S, 3], the images of each class together,
                             classes in the order of classes.txt
    OUT/<split>/classes.txt  one line per class: its name, a tab, its number of images
    OUT/READY                JSON: format, image size, classes and images per split, the
                             per-channel mean and std of the training images (in [0, 1]),
                             and the SHA-256 of every file

Everything is written into a temporary folder renamed into place at the end, so
an interrupted preparation never leaves data that looks complete, and a second
run that finds READY verified does nothing.
"""
import fcntl
import hashlib
import json
import os
import shutil
import signal

import numpy as np

FORMAT = 1


class PrepareError(Exception):
    """A missing, wrong, truncated or incomplete source; one line for the user."""


def file_hash(path, algorithm="sha256"):
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_split_file(path):
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def ready(out, format_version=FORMAT):
    """True if OUT holds a complete, verified preparation of FORMAT_VERSION."""
    try:
        with open(os.path.join(out, "READY")) as f:
            meta = json.load(f)
        return meta.get("format") == format_version and all(
            file_hash(os.path.join(out, rel)) == digest for rel, digest in meta["sha256"].items())
    except (OSError, ValueError, KeyError):
        return False


def write_ready(work, files, **fields):
    """WORK/READY: FIELDS and the SHA-256 of FILES (paths relative to WORK), written last."""
    digests = {rel: file_hash(os.path.join(work, rel)) for rel in files}
    with open(os.path.join(work, "READY"), "w") as f:
        json.dump(dict(fields, sha256=digests), f, indent=1)


def install(out, build):
    """Run BUILD(work) in a temporary folder next to OUT, then rename it into OUT's
    place (an old OUT is moved aside first and removed last). Leftovers of killed
    runs are removed first; on any failure the temporary folder goes. One
    preparation at a time in OUT's folder (a lock on the folder itself, so no
    file is left behind): a second one stops with one line instead of removing
    the first one's temporary folder."""
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    base = os.path.basename(os.path.abspath(out))
    folder = os.open(parent, os.O_RDONLY)
    try:
        try:
            fcntl.flock(folder, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PrepareError(f"{out}: another preparation in {parent} is running; wait for it to finish") from None
        _install_locked(out, build, parent, base)
    finally:
        os.close(folder)  # releases the lock


def _install_locked(out, build, parent, base):
    for stale in os.listdir(parent):
        if stale.startswith((base + ".tmp-", base + ".old-")):
            shutil.rmtree(os.path.join(parent, stale), ignore_errors=True)
    work = os.path.join(parent, f"{base}.tmp-{os.getpid()}")
    os.makedirs(work)
    try:
        build(work)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if os.path.exists(out):  # an old, incomplete or damaged preparation
        old = os.path.join(parent, f"{base}.old-{os.getpid()}")
        os.replace(out, old)
        os.replace(work, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(work, out)


def write_split(folder, class_sizes, decode_class, imgsize):
    """Write one split: CLASS_SIZES [(name, n images)] in order, decode_class(name) ->
    uint8 [n, S, S, 3]. The array file is filled class by class, so no more than one
    class is decoded in memory at a time."""
    os.makedirs(folder)
    total = sum(n for _, n in class_sizes)
    path = os.path.join(folder, "images.npy")
    array = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=(total, imgsize, imgsize, 3))
    with open(path, "r+b") as f:  # the blocks reserved now: a full disk is an OSError here, not a SIGBUS later
        os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))
    start = 0
    for name, n in class_sizes:
        images = decode_class(name)
        if images.shape != (n, imgsize, imgsize, 3):
            raise PrepareError(f"class {name}: decoded {list(images.shape)}, expected [{n}, {imgsize}, {imgsize}, 3]")
        if n and all(image.min() == image.max() for image in images):
            raise PrepareError(f"class {name}: every image is one flat colour; the source looks broken")
        array[start: start + n] = images
        start += n
    array.flush()
    del array
    with open(os.path.join(folder, "classes.txt"), "w") as f:
        f.writelines(f"{name}\t{n}\n" for name, n in class_sizes)
    return {"classes": len(class_sizes), "images": total}


def decode_images(folder, names, size):
    """uint8 [len(names), size, size, 3], RGB: each image of FOLDER decoded and, if
    it is not size x size already, resized with area interpolation."""
    import cv2

    images = np.zeros([len(names), size, size, 3], dtype=np.uint8)
    for i, name in enumerate(names):
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as f:
                raw = np.frombuffer(f.read(), dtype=np.uint8)
        except OSError:
            raise PrepareError(f"{path} is missing or not a readable image") from None
        image = cv2.imdecode(raw, cv2.IMREAD_COLOR) if raw.size else None
        if image is None:
            raise PrepareError(f"{path} is missing or not a readable image")
        if image.shape[:2] != (size, size):
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
        images[i] = image[:, :, ::-1]  # OpenCV's BGR to RGB
    return images


def channel_stats(folder):
    """Per-channel mean and std of a split's images, in [0, 1] (computed in chunks)."""
    images = np.load(os.path.join(folder, "images.npy"), mmap_mode="r")
    total, square, count = np.zeros(3), np.zeros(3), 0
    for start in range(0, len(images), 1000):
        chunk = images[start: start + 1000].astype(np.float64) / 255.0
        total += chunk.sum(axis=(0, 1, 2))
        square += (chunk ** 2).sum(axis=(0, 1, 2))
        count += chunk.shape[0] * chunk.shape[1] * chunk.shape[2]
    mean = total / count
    return mean.tolist(), np.sqrt(np.maximum(square / count - mean ** 2, 0)).tolist()


def prepare(out, name, build, say=print):
    """BUILD(work) -> (image size, {split: write_split's counts}) into OUT, atomically,
    with READY (the training images' channel statistics included)."""
    if ready(out):
        say(f"{name} is ready in {out}; nothing to do")
        return
    result = {}

    def build_all(work):
        imgsize, counts = build(work)
        mean, std = channel_stats(os.path.join(work, "train"))
        write_ready(work, [f"{split}/{f}" for split in counts for f in ("images.npy", "classes.txt")],
                    format=FORMAT, dataset=name, imgsize=imgsize, counts=counts, mean=mean, std=std)
        result.update(counts)

    install(out, build_all)
    say(f"{name} ready in {out}: " + ", ".join(f"{split} {c['classes']} classes / {c['images']} images"
                                              for split, c in result.items()))


def run(name, source, out, what, make_build, prepare_into=None):
    """What each set's prepare.py main does: with no source, "nothing to do" if OUT
    is ready, else one line saying what to get (WHAT); with one, prepare(out, name,
    make_build()) (or PREPARE_INTO(out, name, build) for a set of other files than
    images). Errors are one line on stderr; returns the exit code."""
    import sys

    previous = sigterm_as_interrupt()
    try:
        if not source:
            if ready(out):
                print(f"{name} is ready in {out}; nothing to do")
                return 0
            raise PrepareError(what)
        (prepare_into or prepare)(out, name, make_build())
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: {e.filename or out}: {e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        print(f"interrupted; {out} is as it was (the temporary folder is removed)", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 0


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the preparation is, so it cleans up as for Ctrl-C."""


def sigterm_as_interrupt():
    """From now on SIGTERM raises Terminated; returns the handler to put back."""
    def terminated(signum, frame):
        raise Terminated()

    return signal.signal(signal.SIGTERM, terminated)


def check_classes(split, found, expected, images_per_class, source):
    """FOUND {class: n images} must hold exactly the EXPECTED classes with
    IMAGES_PER_CLASS images each; else PrepareError naming the first problem."""
    missing = [c for c in expected if c not in found]
    if missing:
        raise PrepareError(f"{source}: the {split} split lacks {len(missing)} of its {len(expected)} classes "
                           f"(first: {missing[0]}); incomplete or another split?")
    extra = sorted(set(found) - set(expected))
    if extra:
        raise PrepareError(f"{source}: the {split} split has classes outside datasets/*/splits ({extra[0]}, ...)")
    short = [(c, found[c]) for c in expected if found[c] != images_per_class]
    if short:
        raise PrepareError(f"{source}: class {short[0][0]} of the {split} split has {short[0][1]} images, "
                           f"expected {images_per_class}; truncated?")
