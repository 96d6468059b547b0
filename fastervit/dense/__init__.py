"""FasterViT as a backbone for dense prediction (chapter 12).

* :mod:`~fastervit.dense.fpn`: the feature-pyramid neck (Lin et al., 2017);
* :mod:`~fastervit.dense.upernet`: pyramid pooling, a light UperNet head (Xiao et al., 2018)
  and :class:`~fastervit.dense.upernet.SegmentationModel`;
* :mod:`~fastervit.dense.scenes`: a segmentation task generated in code from Fashion-MNIST;
* :mod:`~fastervit.dense.metrics`: confusion matrix, IoU, mIoU with an ignore index;
* :mod:`~fastervit.dense.train`: training and evaluation (reduced on a CPU, full on a GPU).
"""

from fastervit.dense.fpn import FPN, ConvNormAct
from fastervit.dense.metrics import IGNORE_INDEX, confusion_matrix, iou_per_class, mean_iou, pixel_accuracy
from fastervit.dense.scenes import PastedScenes, SceneConfig
from fastervit.dense.upernet import PyramidPooling, SegmentationModel, UperNetHead

__all__ = [
    "FPN",
    "IGNORE_INDEX",
    "ConvNormAct",
    "PastedScenes",
    "PyramidPooling",
    "SceneConfig",
    "SegmentationModel",
    "UperNetHead",
    "confusion_matrix",
    "iou_per_class",
    "mean_iou",
    "pixel_accuracy",
]
