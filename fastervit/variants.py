"""Every published FasterViT, as data, and the one entry point that builds them.

A variant is a set of constructor keyword arguments plus the preprocessing its released
weights expect. ``*_any_res`` variants share the checkpoint of their fixed-resolution twin
and are built for a larger, non-square default resolution; any model runs at any input
size with sides divisible by 32, so they differ from their twin only in that default.

One variant is this book's own: ``faster_vit_fashion_mnist``, a small FasterViT trained on
Fashion-MNIST on a CPU by ``python -m fastervit train`` (chapter 11). Its weights ship with
the package, so ``create_model("faster_vit_fashion_mnist", pretrained=True)`` needs no file.
"""

import difflib
import fnmatch
import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastervit.checkpoint import (
    CheckpointMismatchError,
    LoadReport,
    is_training_checkpoint,
    load_checkpoint,
    read_checkpoint,
)
from fastervit.model import FasterViT

RELEASE_URL = "https://huggingface.co/ahatamiz/FasterViT/resolve/main/"
WEIGHTS_DIR = Path(__file__).parent / "weights"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class PretrainedCfg:
    """How the released weights were evaluated: input size, crop and normalisation."""

    checkpoint_file: str
    input_size: tuple[int, int, int] = (3, 224, 224)
    crop_pct: float = 1.0
    crop_mode: str = "center"
    interpolation: str = "bicubic"
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    bundled: bool = False  # the file ships in fastervit/weights/ (else: download it from `url`)

    @property
    def url(self) -> str | None:
        return None if self.bundled else RELEASE_URL + self.checkpoint_file

    @property
    def path(self) -> Path | None:
        """The shipped checkpoint, for a bundled variant."""
        return WEIGHTS_DIR / self.checkpoint_file if self.bundled else None


@dataclass(frozen=True)
class Variant:
    kwargs: dict[str, Any]
    pretrained_cfg: PretrainedCfg


_HEADS_SMALL = (2, 4, 8, 16)
_HEADS_LARGE = (4, 8, 16, 32)
_HAT_STAGE3 = (False, False, True, False)
_LAYER_SCALE = dict(layer_scale=1e-5, layer_scale_conv=None, do_propagation=True)

# Constructor arguments of the ImageNet-1K models, FasterViT-0 to -6.
_FAMILY: dict[str, dict[str, Any]] = {
    "0": dict(depths=(2, 3, 6, 5), num_heads=_HEADS_SMALL, dim=64, in_dim=64, drop_path_rate=0.2),
    "1": dict(depths=(1, 3, 8, 5), num_heads=_HEADS_SMALL, dim=80, in_dim=32, drop_path_rate=0.2),
    "2": dict(depths=(3, 3, 8, 5), num_heads=_HEADS_SMALL, dim=96, in_dim=64, drop_path_rate=0.2),
    "3": dict(
        depths=(3, 3, 12, 5), num_heads=_HEADS_SMALL, dim=128, in_dim=64, drop_path_rate=0.3, **_LAYER_SCALE
    ),
    "4": dict(
        depths=(3, 3, 12, 5),
        num_heads=_HEADS_LARGE,
        dim=196,
        in_dim=64,
        drop_path_rate=0.3,
        layer_norm_last=False,
        **_LAYER_SCALE,
    ),
    "5": dict(
        depths=(3, 3, 12, 5),
        num_heads=_HEADS_LARGE,
        dim=320,
        in_dim=64,
        drop_path_rate=0.3,
        layer_norm_last=False,
        **_LAYER_SCALE,
    ),
    "6": dict(
        depths=(3, 3, 16, 8),
        num_heads=_HEADS_LARGE,
        dim=320,
        in_dim=64,
        drop_path_rate=0.5,
        layer_norm_last=False,
        **_LAYER_SCALE,
    ),
}
_COMMON = dict(window_size=(7, 7, 7, 7), ct_size=2, mlp_ratio=4, hat=_HAT_STAGE3)
_ANY_RES = {"2": (541, 960)}  # the release builds FasterViT-2's any-res twin at 541x960, the rest at 576x960

# ImageNet-21K-pretrained FasterViT-4, fine-tuned at 224-768 px: global attention in stages
# 3 and 4 (one window each at the fine-tuning resolution), no carrier tokens.
_IN21K = {
    224: ((7, 7, 14, 7), 0.95),
    384: ((7, 7, 24, 12), 1.0),
    512: ((7, 7, 32, 16), 1.0),
    768: ((7, 7, 48, 24), 0.93),
}


# The book's own model (chapter 11): FasterViT's layout shrunk for 28x28 clothes upscaled to
# 64 px. Stages 1-2 are convolutional (16x16 and 8x8 maps); stage 3 is a 4x4 map of 2x2
# windows, each summarised by one carrier token (hierarchical attention over 4 windows);
# stage 4 is one 2x2 window. Window sizes of the conv stages are unused.
FASHION_MNIST = Variant(
    dict(
        dim=32,
        in_dim=32,
        depths=(2, 3, 6, 2),
        num_heads=(2, 4, 8, 16),
        window_size=(2, 2, 2, 2),
        ct_size=1,
        mlp_ratio=4,
        hat=_HAT_STAGE3,
        resolution=64,
        in_chans=1,
        num_classes=10,
        drop_path_rate=0.05,
    ),
    PretrainedCfg(
        "faster_vit_fashion_mnist.pth",
        input_size=(1, 64, 64),
        mean=(0.2860,),
        std=(0.3530,),
        bundled=True,
    ),
)


def _build_registry() -> dict[str, Variant]:
    registry: dict[str, Variant] = {"faster_vit_fashion_mnist": FASHION_MNIST}
    for family, kwargs in _FAMILY.items():
        cfg = PretrainedCfg(f"fastervit_{family}_224_1k.pth.tar", crop_pct=0.875 if family == "0" else 1.0)
        registry[f"faster_vit_{family}_224"] = Variant({**_COMMON, **kwargs, "resolution": 224}, cfg)
        registry[f"faster_vit_{family}_any_res"] = Variant(
            {**_COMMON, **kwargs, "resolution": _ANY_RES.get(family, (576, 960))}, cfg
        )
    for size, (windows, crop_pct) in _IN21K.items():
        kwargs = {**_COMMON, **_FAMILY["4"], "window_size": windows, "hat": (False,) * 4}
        cfg = PretrainedCfg(
            f"fastervit_4_21k_{size}_w{windows[2]}.pth.tar", (3, size, size), crop_pct, crop_mode="squash"
        )
        registry[f"faster_vit_4_21k_{size}"] = Variant(
            {**kwargs, "resolution": size, "drop_path_rate": 0.42}, cfg
        )
        registry[f"faster_vit_4_21k_{size}_any_res"] = Variant({**kwargs, "resolution": (576, 960)}, cfg)
    return dict(sorted(registry.items()))


VARIANTS = _build_registry()


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered variants matching a shell-style ``pattern`` (e.g. ``"*any_res"``)."""
    return [name for name in VARIANTS if fnmatch.fnmatch(name, pattern)]


def model_kwargs(name: str) -> dict[str, Any]:
    """The constructor keyword arguments of a registered variant (a fresh copy)."""
    if name not in VARIANTS:
        containing = list_models(f"*{name}*")
        close = difflib.get_close_matches(
            name, containing or list(VARIANTS), n=5, cutoff=0 if containing else 0.6
        )
        suggestion = f"did you mean {', '.join(close)}? " if close else ""
        raise KeyError(
            f"unknown model {name!r}; {suggestion}fastervit.list_models() lists all {len(VARIANTS)}"
        )
    return dict(VARIANTS[name].kwargs)


# Constructor arguments that change neither the weights nor the function in eval mode: a
# checkpoint loads whatever they are.
_FREE_ARGUMENTS = {"resolution", "drop_path_rate", "drop_rate", "attn_drop_rate", "fused_attn"}
_DEFAULTS = {
    key: p.default for key, p in inspect.signature(FasterViT).parameters.items() if p.default is not p.empty
}


def _comparable(value: Any) -> Any:
    return list(value) if isinstance(value, (tuple, list)) else value


def _check_training_arguments(
    name: str, kwargs: dict[str, Any], checkpoint: Mapping, skip_head: bool
) -> None:
    """Refuse a `fastervit train` checkpoint whose model was built with other arguments.

    Arguments such as ``window_size`` or ``do_propagation`` change the function without
    changing a weight's shape, so a strict load alone would not notice them.
    """
    trained_name = checkpoint.get("model_name", name)
    trained = {**VARIANTS[trained_name].kwargs} if trained_name in VARIANTS else {}
    trained.update(checkpoint["model_kwargs"])
    free = _FREE_ARGUMENTS | ({"num_classes"} if skip_head else set())
    differing = [
        (
            key,
            _comparable(trained.get(key, _DEFAULTS.get(key))),
            _comparable(kwargs.get(key, _DEFAULTS.get(key))),
        )
        for key in sorted((set(trained) | set(kwargs)) - free)
    ]
    differing = [entry for entry in differing if entry[1] != entry[2]]
    if trained_name not in VARIANTS:
        differing.insert(0, ("model", trained_name, name))
    if differing:
        raise CheckpointMismatchError(
            [],
            [],
            [],
            differing,
            hint=(
                f"this is a `fastervit train` checkpoint of {trained_name!r}: build the model it "
                f"holds, create_model({trained_name!r}, pretrained=path, **checkpoint['model_kwargs']) "
                "with checkpoint = fastervit.read_checkpoint(path) (its model_kwargs: "
                f"{dict(checkpoint['model_kwargs'])})"
            ),
        )


def _bundled_weights(name: str) -> Path:
    """The shipped checkpoint of ``name``, or an error saying where its weights come from."""
    cfg = VARIANTS[name].pretrained_cfg
    if cfg.path is None:
        raise ValueError(
            f"the weights of {name!r} do not ship with the package and nothing is downloaded at run "
            f"time: download {cfg.url} and pass its path, create_model({name!r}, pretrained=path)"
        )
    if not cfg.path.is_file():
        raise FileNotFoundError(
            f"the shipped weights of {name!r} are missing from this installation: {cfg.path}"
        )
    return cfg.path


def create_model(
    name: str,
    pretrained: bool | str | Path | Mapping | None = None,
    *,
    skip_head: bool = False,
    **overrides: Any,
) -> FasterViT:
    """Build a registered variant, optionally loading weights from a local checkpoint.

    Args:
        name: a name from :func:`list_models`, e.g. ``"faster_vit_0_224"``.
        pretrained: ``True`` for the weights that ship with the package (the book's
            ``faster_vit_fashion_mnist``; the release's files are not shipped and nothing is
            downloaded: pass the path of a downloaded file instead), or a checkpoint file, or
            the dict it holds: the official release format (a
            dict with ``"state_dict"``), a bare state dict, a timm training checkpoint, or a
            ``fastervit train`` checkpoint (its EMA weights when the run kept them). Files
            are read with :func:`~fastervit.checkpoint.read_checkpoint` and loaded with
            ``strict=True``; a mismatch raises
            :class:`~fastervit.checkpoint.CheckpointMismatchError` listing what differs. A
            ``fastervit train`` checkpoint must be loaded into the model it was trained as:
            ``create_model(name, pretrained=path, **checkpoint["model_kwargs"])``.
        skip_head: load everything but the classifier (for a different ``num_classes``).
        **overrides: constructor arguments that replace the variant's, e.g.
            ``num_classes=10`` or ``resolution=(320, 256)``.

    The load report (which entry was loaded, which buffers were recomputed) is kept as
    ``model.load_report``.
    """
    kwargs = {**model_kwargs(name), **overrides}
    if pretrained is True:
        pretrained = _bundled_weights(name)
    elif pretrained is False:
        pretrained = None
    checkpoint = read_checkpoint(pretrained) if isinstance(pretrained, (str, Path)) else pretrained
    if isinstance(checkpoint, Mapping) and is_training_checkpoint(checkpoint):
        _check_training_arguments(name, kwargs, checkpoint, skip_head)
    model = FasterViT(**kwargs)
    model.pretrained_cfg = VARIANTS[name].pretrained_cfg
    model.load_report: LoadReport | None = None
    if checkpoint is not None:
        model.load_report = load_checkpoint(model, checkpoint, skip_head=skip_head)
    return model
