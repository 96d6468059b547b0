"""Data for training without downloads (chapters 10 and 11).

* :mod:`~fastervit.data.datasets`: Fashion-MNIST (Debian package), scikit-learn's digits,
  ImageNet-style folders; :func:`~fastervit.data.datasets.build_dataset`;
* :mod:`~fastervit.data.transforms`: augmentation and evaluation pipelines in Pillow/torch;
* :mod:`~fastervit.data.rand_augment`, :mod:`~fastervit.data.random_erasing`: timm's
  RandAugment policies and random erasing, drawing from an explicit generator
  (:mod:`~fastervit.data.draw`);
* :mod:`~fastervit.data.mixup`: mixup and cutmix with soft targets;
* :mod:`~fastervit.data.sampler`: a reproducible, resumable, sharded data order.
"""

from fastervit.data.datasets import DatasetInfo, ImageDataset, build_dataset
from fastervit.data.mixup import Mixup
from fastervit.data.sampler import ResumableSampler
from fastervit.data.transforms import TransformConfig, build_transform

__all__ = [
    "DatasetInfo",
    "ImageDataset",
    "Mixup",
    "ResumableSampler",
    "TransformConfig",
    "build_dataset",
    "build_transform",
]
