"""Labelled Omniglot images for supervised pre-training (Classifier-Baseline):
every drawing of every training class (character x rotation) with its class
index, from the same folders and with the same keys as MAML's omniglot_reader.py.
Mode "infer" gives test episodes: that episode reader's."""
from models.common import omniglot
from models.common.images import LabelledImages
from models.multitask.maml import omniglot_reader

READER_OPTIONS = omniglot_reader.READER_OPTIONS


def describe(config):
    """The image shape and the number of training classes (the classifier's width)."""
    classes = omniglot.count_classes(config["runner"]["train_data_dir"], config["hyper_parameters"]["rotations"])
    return dict(omniglot_reader.describe(config), n_classes=classes)


def check_data(config, mode):
    """Training: every class needs one image (no episodes); test: the episode reader's check."""
    if mode == "infer":
        return omniglot_reader.check_data(config, mode)
    hp = config["hyper_parameters"]
    return omniglot.check_folder(config["runner"]["train_data_dir"], "runner.train_data_dir", 1, 1,
                                 hp["imgsize"], hp["rotations"])


class RecDataset(LabelledImages):
    @classmethod
    def from_config(cls, config, mode):
        if mode == "infer":
            return omniglot_reader.RecDataset.from_config(config, mode)
        hp, runner = config["hyper_parameters"], config["runner"]
        characters = omniglot.OmniglotCharacters(runner["train_data_dir"], hp["imgsize"], 1, hp["rotations"],
                                                 hp["resize"])
        return cls(characters.images, runner["seed"])
