"""The full FasterViT (chapter 7): a stem, two convolutional stages, two attention stages.

Stage ``i`` works at stride ``2**(i+2)`` with width ``dim * 2**i``. Stages 1 and 2 are
residual conv blocks; stages 3 and 4 are HAT blocks over windows, with carrier tokens where
``hat[i]`` is set and the input's map holds more than one window. Every stage but the last
ends in a downsampler. The attribute names follow the released checkpoints, so that their
state dicts load with ``strict=True``.
"""

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from fastervit.geometry import has_carrier_tokens, stage_geometry, stage_side
from fastervit.layers import HAT, ConvBlock, Downsample, LayerNorm2d, Stem, TokenInitializer
from fastervit.layers.attention import attention_modules
from fastervit.layers.linear import Linear
from fastervit.layers.windows import Grid, as_grid, pad_to_windows, window_partition, window_reverse

MIN_SIDE = 32  # the total stride of the stem and the three downsamplers
# Names of the modules and parameters that only carrier tokens use.
_CARRIER_ONLY = ("global_tokenizer", "hat_", "gamma1", "gamma2")


def _init_weights(m: nn.Module) -> None:
    """The release's initialisation: truncated normal (std 0.02) for every Linear with a zero
    bias (the position MLPs and the classifier included), ones and zeros for the norms.

    Exceptions, as in the release: convolutions keep PyTorch's default (Kaiming uniform), and
    the layer-scale gammas keep their constant ``layer_scale``.
    """
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.BatchNorm2d)):  # LayerNorm2d is a LayerNorm
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)


def _take_indices(indices: int | Sequence[int] | None, num_stages: int) -> tuple[set[int], int]:
    """timm's stage selection: None for all, ``n`` for the last n, or a sequence of indices
    (negative ones count from the end). Returns the selected indices and the largest."""
    if indices is None:
        indices = num_stages
    if isinstance(indices, int):
        if not 0 < indices <= num_stages:
            raise ValueError(f"indices={indices} selects the last n stages: n must be 1 to {num_stages}")
        take = set(range(num_stages - indices, num_stages))
    else:
        take = {i + num_stages if i < 0 else i for i in indices}
        if not take or not all(0 <= i < num_stages for i in take):
            raise ValueError(
                f"indices={list(indices)}: give stage indices from {-num_stages} to {num_stages - 1}"
            )
    return take, max(take)


class FasterViTLayer(nn.Module):
    """One stage: ``depth`` blocks at a fixed width, and the downsampler that follows them.

    ``forward`` runs the blocks only; the model applies ``downsample`` after reading the
    stage's features, so that the backbone can return them.

    Shapes: ``(B, C, H, W) -> (B, C, H, W)``.
    """

    def __init__(
        self,
        dim: int,
        depth: int,
        input_resolution: Grid,
        num_heads: int,
        window_size: int,
        ct_size: int = 2,
        conv: bool = False,
        downsample: bool = True,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: Sequence[float] = (),
        layer_scale: float | None = None,
        layer_scale_conv: float | None = None,
        hat: bool = False,
        do_propagation: bool = False,
        fused_attn: bool = True,
    ) -> None:
        super().__init__()
        drop_path = list(drop_path) or [0.0] * depth
        self.conv = conv
        self.window_size = window_size
        geometry = stage_geometry(input_resolution, window_size, hat and not conv)
        self.built_windows: Grid = geometry.windows
        # Carrier-token modules exist in every hierarchical-attention stage, whatever the build
        # resolution (the release omits them where it leaves a single window), so that any
        # checkpoint loads at any resolution; the forward decides from the input's size.
        carrier = not conv and hat
        if conv:
            self.blocks = nn.ModuleList(
                ConvBlock(dim, drop_path=drop_path[i], layer_scale=layer_scale_conv) for i in range(depth)
            )
        else:
            self.blocks = nn.ModuleList(
                HAT(
                    dim,
                    num_heads,
                    window_size,
                    windows=geometry.windows if carrier else None,
                    ct_size=ct_size,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop,
                    attn_drop=attn_drop,
                    drop_path=drop_path[i],
                    layer_scale=layer_scale,
                    propagate=do_propagation and i == depth - 1,
                    fused_attn=fused_attn,
                )
                for i in range(depth)
            )
        self.downsample = Downsample(dim) if downsample else None
        self.global_tokenizer = TokenInitializer(dim, ct_size) if carrier else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv:
            for block in self.blocks:
                x = block(x)
            return x
        B, C, H, W = x.shape
        w = self.window_size
        x = pad_to_windows(x, w)  # (B, C, Hp, Wp)
        Hp, Wp = x.shape[2:]
        windows = (Hp // w, Wp // w)
        # A single window already attends globally: carrier tokens would add nothing.
        carrier = has_carrier_tokens(windows, self.global_tokenizer is not None)
        ct = self.global_tokenizer(x, w) if carrier else None  # (B, nh*nw*ct*ct, C)
        x = window_partition(x, w)  # (B*nh*nw, w*w, C)
        for block in self.blocks:
            x, ct = block(x, ct, windows)
        x = window_reverse(x, w, Hp, Wp)
        return x[:, :, :H, :W].contiguous() if (Hp, Wp) != (H, W) else x


class FasterViT(nn.Module):
    """FasterViT classifier and multi-scale backbone.

    The keyword arguments are those of the released constructor (so every published
    variant is a set of them, see :mod:`fastervit.variants`), plus ``fused_attn``.

    Args:
        dim: width of stage 1; stage ``i`` has ``dim * 2**i`` channels.
        in_dim: width of the stem's hidden layer.
        depths: blocks per stage (4 stages).
        window_size: window side per stage (used by stages 3 and 4).
        ct_size: carrier tokens per window side.
        mlp_ratio: hidden width of the MLPs relative to the block width.
        num_heads: attention heads per stage.
        resolution: the input size the model is built for, an int or ``(H, W)`` (sides of at
            least 32); it sets the shapes of the position-bias buffers only. Inputs of any
            other size with sides divisible by 32 work as well.
        drop_path_rate: stochastic depth, rising linearly over the blocks to this rate.
        in_chans, num_classes: input channels and classes (0 for no classifier).
        qkv_bias, qk_scale: attention's qkv bias and logit scale (default ``head_dim**-0.5``).
        drop_rate, attn_drop_rate: dropout after MLPs/projections and on attention weights.
        layer_scale, layer_scale_conv: initial LayerScale of attention and conv blocks, or None.
        layer_norm_last: LayerNorm instead of BatchNorm before the head.
        hat: per stage, whether it uses hierarchical attention (carrier tokens, where the
            input's map holds more than one window; None: every stage).
        do_propagation: add the carrier tokens back to the map after each attention stage.
        fused_attn: use ``F.scaled_dot_product_attention`` (same numbers, faster).

    Shapes: ``forward``: ``(B, in_chans, H, W) -> (B, num_classes)`` for H, W divisible by 32.
    """

    def __init__(
        self,
        dim: int,
        in_dim: int,
        depths: Sequence[int],
        window_size: Sequence[int],
        ct_size: int,
        mlp_ratio: float,
        num_heads: Sequence[int],
        resolution: int | Sequence[int] = 224,
        drop_path_rate: float = 0.2,
        in_chans: int = 3,
        num_classes: int = 1000,
        qkv_bias: bool = True,
        qk_scale: float | None = None,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        layer_scale: float | None = None,
        layer_scale_conv: float | None = None,
        layer_norm_last: bool = False,
        hat: Sequence[bool] | None = (False, False, True, False),
        do_propagation: bool = False,
        fused_attn: bool = True,
    ) -> None:
        super().__init__()
        for name, value in (("depths", depths), ("window_size", window_size), ("num_heads", num_heads)):
            if len(value) != 4:
                raise ValueError(f"{name} needs one entry per stage (4), got {list(value)}")
        hat = [True] * 4 if hat is None else list(hat)
        height, width = as_grid(resolution)
        if min(height, width) < MIN_SIDE:
            raise ValueError(
                f"resolution={resolution}: the model is built for inputs with sides of at least "
                f"{MIN_SIDE} (its total stride); pass the input size, e.g. resolution=224"
            )
        if num_classes < 0:
            raise ValueError(f"num_classes={num_classes}: pass a number of classes, or 0 for no classifier")
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.resolution = (height, width)
        self.dims = [int(dim * 2**i) for i in range(4)]
        self.num_features = self.dims[-1]
        dpr = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()

        self.patch_embed = Stem(in_chans, in_dim, dim)
        self.levels = nn.ModuleList()
        for i in range(4):
            self.levels.append(
                FasterViTLayer(
                    dim=self.dims[i],
                    depth=depths[i],
                    input_resolution=stage_side((height, width), i),
                    num_heads=num_heads[i],
                    window_size=window_size[i],
                    ct_size=ct_size,
                    conv=i < 2,
                    downsample=i < 3,
                    mlp_ratio=mlp_ratio,
                    qkv_bias=qkv_bias,
                    qk_scale=qk_scale,
                    drop=drop_rate,
                    attn_drop=attn_drop_rate,
                    drop_path=dpr[sum(depths[:i]) : sum(depths[: i + 1])],
                    layer_scale=layer_scale,
                    layer_scale_conv=layer_scale_conv,
                    hat=hat[i],
                    do_propagation=do_propagation,
                    fused_attn=fused_attn,
                )
            )
        self.norm = LayerNorm2d(self.num_features) if layer_norm_last else nn.BatchNorm2d(self.num_features)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.head = Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.apply(_init_weights)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise a ValueError naming the constraint that ``x`` breaks, if any."""
        if x.ndim != 4:
            raise ValueError(
                f"expected a batch of images (B, C, H, W), got a tensor of shape {tuple(x.shape)}"
            )
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"the model takes {self.in_chans}-channel images, got {x.shape[1]} channels; "
                f"convert the images or build the model with in_chans={x.shape[1]}"
            )
        weight = self.patch_embed.conv_down[0].weight
        if not x.is_floating_point():
            raise ValueError(
                f"the model takes floating-point images, got {x.dtype}; convert them, e.g. "
                "x.float() / 255 for 8-bit pixels, then normalise with the mean and std the "
                "weights expect (model.pretrained_cfg for released weights)"
            )
        if x.dtype != weight.dtype and not torch.is_autocast_enabled(x.device.type):
            raise ValueError(
                f"the images are {x.dtype} but the model's weights are {weight.dtype}; convert "
                f"the images (x.to({weight.dtype})) or the model (model.to({x.dtype})), or run "
                "the model under torch.autocast"
            )
        height, width = x.shape[-2:]
        fix = f"{max(MIN_SIDE, 32 * math.ceil(height / 32))}x{max(MIN_SIDE, 32 * math.ceil(width / 32))}"
        if min(height, width) < MIN_SIDE:
            raise ValueError(
                f"image sides must be at least {MIN_SIDE} pixels (the total stride), got "
                f"{height}x{width}; resize or pad to e.g. {fix}"
            )
        if height % 32 or width % 32:
            raise ValueError(
                f"image sides must be multiples of 32 (the total stride), got {height}x{width}; "
                f"resize or pad to e.g. {fix}"
            )

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | Sequence[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        intermediates_only: bool = False,
    ) -> tuple[torch.Tensor, list[torch.Tensor]] | list[torch.Tensor]:
        """Per-stage feature maps for detection and segmentation heads, as timm's models give them.

        Args:
            x: images ``(B, in_chans, H, W)``.
            indices: the stages to return: None for all four, an int ``n`` for the last
                ``n``, or a sequence of stage indices (negative ones count from the end).
            norm: apply the final norm to the last stage's map when it is returned.
            stop_early: run no stage after the last one requested; the final features are
                then that stage's map, not normalised.
            intermediates_only: return the maps alone (the later stages are not run).

        Returns:
            ``(final, intermediates)``: ``final`` as :meth:`forward_features` gives it,
            ``(B, C, H/32, W/32)``; ``intermediates`` the selected stages' maps in stage
            order, ``(B, dim * 2**i, H / 2**(i+2), W / 2**(i+2))`` at strides 4 to 32, each as
            its stage leaves it (before the downsampler). Only the list with
            ``intermediates_only``.
        """
        num_stages = len(self.levels)
        take, last = _take_indices(indices, num_stages)
        run = last + 1 if stop_early or intermediates_only else num_stages
        self.check_input(x)
        x = self.patch_embed(x)  # (B, dim, H/4, W/4)
        intermediates = []
        for i, level in enumerate(self.levels[:run]):
            x = level(x)  # (B, dim * 2**i, H / 2**(i+2), W / 2**(i+2))
            if i in take:
                intermediates.append(self.norm(x) if norm and i == num_stages - 1 else x)
            if i < run - 1:
                x = level.downsample(x)
        if intermediates_only:
            return intermediates
        if run == num_stages:
            x = intermediates[-1] if norm and num_stages - 1 in take else self.norm(x)
        return x, intermediates

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """The normalised last-stage map. Shapes: ``(B, in_chans, H, W) -> (B, C, H/32, W/32)``."""
        return self.forward_intermediates(x, indices=1)[0]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Pool and classify. Shapes: ``(B, C, h, w) -> (B, num_classes)`` (``(B, C)`` if pre_logits)."""
        x = self.avgpool(x).flatten(1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier by a freshly initialised one for ``num_classes`` (0: none).

        With no classifier, :meth:`forward` returns the pooled features ``(B, num_features)``.
        """
        if num_classes < 0:
            raise ValueError(f"num_classes={num_classes}: pass a number of classes, or 0 for no classifier")
        self.num_classes = num_classes
        self.head = Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head.apply(_init_weights)

    def unused_parameters(self) -> list[str]:
        """Names of the parameters that a forward at the build resolution does not use.

        These are the carrier-token weights of hierarchical-attention stages whose map holds a
        single window there: they exist so that checkpoints load at any resolution, and
        receive no gradient. ``DistributedDataParallel`` must then be built with
        ``find_unused_parameters=True``.
        """
        idle = []
        for i, level in enumerate(self.levels):
            if level.global_tokenizer is not None and math.prod(level.built_windows) == 1:
                idle += [
                    f"levels.{i}.{name}"
                    for name, _ in level.named_parameters()
                    if any(part.startswith(_CARRIER_ONLY) for part in name.split("."))
                ]
        return idle

    def deploy(self, **options: Any) -> nn.Module:
        """An inference-only, faster copy of this model (chapter 9): see :func:`fastervit.deploy.deploy`."""
        from fastervit.deploy import deploy  # builds on this module: imported when used

        return deploy(self, **options)

    def set_fused_attn(self, enabled: bool) -> None:
        """Switch every attention between the fused kernel and the explicit product."""
        for attention in attention_modules(self):
            attention.fused = enabled

    @torch.jit.ignore
    def no_weight_decay_keywords(self) -> set[str]:
        """Parameter-name fragments to exclude from weight decay (the position MLPs)."""
        return {"cpb_mlp", "gamma"}
