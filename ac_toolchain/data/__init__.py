"""Datasets: mnist-mini (bundled default), mnist (idx), cifar10 (python batches), imagefolder, synthetic."""

from ac_toolchain.data import cifar, imagefolder, mnist, synthetic  # noqa: F401  (registers the loaders)
from ac_toolchain.data.registry import Splits, dataset_names, load_dataset, register_dataset

__all__ = ["Splits", "dataset_names", "load_dataset", "register_dataset"]
