"""Datasets: mnist-mini (bundled default), mnist (idx), cifar10 (python batches), imagefolder, synthetic.

``load_dataset("NAME[:PATH]", (C, H, W))`` returns seeded train / val / test splits whose items are
``(float32 [C, H, W], int64 [])``, adapted to the model's input shape and normalised with the training split's
per-channel statistics (``splits.train.normalise.mean`` / ``.std``).
"""

from ac_toolchain.data import cifar, imagefolder, mnist, mnist_mini, synthetic  # noqa: F401  (register loaders)
from ac_toolchain.data.datasets import ImageDataset, ImageStore, TensorImages
from ac_toolchain.data.registry import Source, Splits, dataset_names, load_dataset, register_dataset
from ac_toolchain.data.transforms import Normalise, adapt

__all__ = [
    "ImageDataset",
    "ImageStore",
    "Normalise",
    "Source",
    "Splits",
    "TensorImages",
    "adapt",
    "dataset_names",
    "load_dataset",
    "register_dataset",
]
