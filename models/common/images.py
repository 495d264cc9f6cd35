"""Labelled images for supervised pre-training (Classifier-Baseline): every
image of every training class, in shuffled passes, endless and resumable."""
import numpy as np
import paddle

from models.common.episodes import scale_to_unit


class LabelledImages(paddle.io.IterableDataset):
    """Yields (image float32 [C, H, W], label int64) over CLASSES (one uint8
    array per class, [images, H, W] or [images, H, W, C]); label c is class c.
    Each pass visits every image once in an order drawn from the dataset's own
    RandomState(seed); get_state() / set_state() resume mid-pass exactly."""

    def __init__(self, classes, seed, normalize=None):
        super().__init__()
        self.classes = classes
        self.index = np.concatenate([np.stack([np.full(len(images), c), np.arange(len(images))], axis=1)
                                     for c, images in enumerate(classes)])
        self.normalize = normalize or scale_to_unit
        self.rng = np.random.RandomState(seed)
        self._new_pass()

    def _new_pass(self):
        self.pass_start_state = self.rng.get_state()
        self.order = self.rng.permutation(len(self.index))
        self.position = 0

    def __iter__(self):
        while True:
            if self.position == len(self.order):
                self._new_pass()
            c, i = self.index[self.order[self.position]]
            self.position += 1
            yield self.normalize(self.classes[c][i: i + 1])[0], np.int64(c)

    def get_state(self):
        return {"pass_start": self.pass_start_state, "position": self.position}

    def set_state(self, state):
        self.rng.set_state(state["pass_start"])
        self._new_pass()
        self.position = state["position"]
