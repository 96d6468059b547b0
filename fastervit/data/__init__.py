"""Data for training without downloads (chapters 10 and 11).

* :mod:`~fastervit.data.datasets`: Fashion-MNIST (Debian's package, found without settings),
  scikit-learn's digits, ImageNet-style folders with optional class maps;
  :func:`~fastervit.data.datasets.build_dataset`;
* :mod:`~fastervit.data.transforms`: augmentation and evaluation pipelines in Pillow/torch,
  and the evaluation pipeline of released weights from their ``pretrained_cfg``;
* :mod:`~fastervit.data.rand_augment`, :mod:`~fastervit.data.random_erasing`: timm's
  RandAugment policies and random erasing, drawing from an explicit generator
  (:mod:`~fastervit.data.draw`);
* :mod:`~fastervit.data.mixup`: mixup and cutmix with soft targets;
* :mod:`~fastervit.data.sampler`: a reproducible, resumable, sharded data order.
"""

from fastervit.data.datasets import ClassFolders, DatasetInfo, ImageDataset, build_dataset, read_class_map
from fastervit.data.mixup import Mixup
from fastervit.data.sampler import ResumableSampler
from fastervit.data.transforms import TransformConfig, build_transform, pretrained_eval_transform

__all__ = [
    "ClassFolders",
    "DatasetInfo",
    "ImageDataset",
    "Mixup",
    "ResumableSampler",
    "TransformConfig",
    "build_dataset",
    "build_transform",
    "pretrained_eval_transform",
    "read_class_map",
]
