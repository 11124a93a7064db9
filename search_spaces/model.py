"""The model builder: one :class:`~search_spaces.genes.Architecture` in, one vision transformer out.

Registered with timm as ``nas_vit``, so a searched design is an ordinary timm model::

    import search_spaces, timm
    m = timm.create_model("nas_vit", arch={"attention": "mhsa", "embed_dim": 64}, num_classes=10,
                          img_size=16, in_chans=1)

The body is the pre-norm ViT block (ViT, arXiv 2010.11929, eq. 2-3): ``x + attn(LN(x))`` then
``x + mlp(LN(x))``, with the attention taken from the zoo (:mod:`search_spaces.attention`).
"""

from __future__ import annotations

import operator
from collections.abc import Mapping
from typing import Any

import torch
from timm.layers import DropPath, Mlp, build_sincos2d_pos_embed, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import init_weights_vit_timm
from torch import nn
from torch.utils.checkpoint import checkpoint

from . import registry
from .attention import build_attention
from .attention.common import AttentionModule, Rotary, TokenLayout
from .genes import MAX_PARAMS, Architecture, GeneError, estimate_params, short_repr
from .stems import build_stem

__all__ = ["NasViT", "Block", "build_model", "checkpoint_filter_fn", "nas_vit"]


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(LN(x), layout)``, then ``x + mlp(LN(x))``.

    Shapes: (B, N, C) -> (B, N, C).
    """

    def __init__(self, arch: Architecture, layer_index: int, layout: TokenLayout, drop_path: float = 0.0):
        super().__init__()
        dim = arch.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = build_attention(arch, layer_index, layout)
        self.drop_path1 = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * arch.mlp_ratio))
        self.drop_path2 = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        x = x + self.drop_path1(self.attn(self.norm1(x), layout))
        return x + self.drop_path2(self.mlp(self.norm2(x)))


def feature_take_indices(num_blocks: int, indices: int | list[int] | tuple[int, ...] | None) -> tuple[list[int], int]:
    """Block indices to take and the last one, with timm's conventions: None takes every block, an int ``n``
    the last ``n``, a sequence the given indices (negative ones count from the end).

    Raises:
        ValueError: ``n`` outside [1, num_blocks], or an index outside the blocks.
    """
    if indices is None:
        indices = num_blocks
    if isinstance(indices, int):
        if not 0 < indices <= num_blocks:
            raise ValueError(f"indices: take 1 to {num_blocks} blocks, got {indices}")
        take = list(range(num_blocks - indices, num_blocks))
    else:
        if not indices or not all(isinstance(i, int) and not isinstance(i, bool) for i in indices):
            raise ValueError(f"indices: give block indices (integers), got {list(indices)!r}"[:200])
        take = [i + num_blocks if i < 0 else i for i in indices]
        if any(not 0 <= i < num_blocks for i in take):
            raise ValueError(f"indices: block indices must lie in [-{num_blocks}, {num_blocks - 1}], got {list(indices)}")
    return take, max(take)


def _as_arch(arch: Architecture | Mapping[str, Any] | str | None) -> Architecture:
    if arch is None:
        return Architecture()
    if isinstance(arch, Architecture):
        return arch
    if isinstance(arch, str):
        from .presets import get_preset  # local import: presets import this module's neighbours
        return get_preset(arch)
    return Architecture.from_dict(arch)


#: Largest image side in pixels, and largest token grid (rows x cols), that a model may be built for:
#: 4096 px is far beyond any ViT checkpoint (ImageNet 224-518 px); 65536 tokens is a 256 x 256 grid
#: (512 px at patch 2), where one N x N attention map is already 16 GB in float32.
MAX_IMG_SIZE = 4096
MAX_TOKENS = 65536
#: Largest classifier width (ImageNet-21k has 21841 classes) and input channel count.
MAX_NUM_CLASSES = 100_000
MAX_IN_CHANS = 4096


def _check_int(name: str, value: Any, low: int, high: int) -> int:
    try:
        number = operator.index(value)  # int, or an integer type such as numpy.int64
    except TypeError:
        number = None
    if number is None or isinstance(value, bool) or not low <= number <= high:
        raise GeneError(f"{name}: must be an integer in [{low}, {high}], got {short_repr(value)}")
    return number


def _check_args(arch: Architecture, img_size: Any, in_chans: Any, num_classes: Any
                ) -> tuple[tuple[int, int], tuple[int, int]]:
    """Check the constructor's arguments before anything is allocated: ``img_size`` (int or (H, W)) per
    side in [1, MAX_IMG_SIZE], at most MAX_TOKENS patch tokens, ``in_chans`` and ``num_classes`` in range,
    and the estimated parameter count within :data:`~search_spaces.genes.MAX_PARAMS`.

    Returns:
        ``(img_size, grid)`` as (H, W) and (rows, cols).

    Raises:
        GeneError: (a ``ValueError``) one line naming the argument and the allowed range.
    """
    if not isinstance(img_size, (tuple, list)):
        sides: tuple[Any, ...] = (img_size, img_size)
    elif len(img_size) == 2:
        sides = tuple(img_size)
    else:
        raise GeneError(f"img_size: expected an integer or (height, width), got {short_repr(img_size)}")
    sides = tuple(_check_int("img_size", side, 1, MAX_IMG_SIZE) for side in sides)
    in_chans = _check_int("in_chans", in_chans, 1, MAX_IN_CHANS)
    num_classes = _check_int("num_classes", num_classes, 0, MAX_NUM_CLASSES)
    grid = arch.check_image(sides)
    tokens = grid[0] * grid[1]
    if tokens > MAX_TOKENS:
        raise GeneError(f"img_size: {sides[0]}x{sides[1]} at patch_size {arch.patch_size} gives {tokens} tokens; "
                        f"at most {MAX_TOKENS} are allowed")
    params = estimate_params(arch.embed_dim, arch.depth, arch.mlp_ratio, arch.patch_size, stem=arch.stem,
                             num_tokens=tokens + 1, in_chans=in_chans, num_classes=num_classes,
                             attention=arch.attention)
    if params > MAX_PARAMS:
        raise GeneError(f"img_size: {arch.describe()[:60]} at {sides[0]}x{sides[1]} px gives about {params:.2g} "
                        f"parameters, over the limit of {MAX_PARAMS:.2g}")
    return sides, grid


class NasViT(nn.Module):
    """A vision transformer built from genes.

    Args:
        arch: an :class:`Architecture`, a mapping of genes (JSON form) or a preset name.
        img_size: input height and width in pixels (int or (H, W)); must be divisible by ``patch_size``.
        in_chans: input channels.
        num_classes: classifier outputs (0 for a feature extractor).
        global_pool: ``"token"`` (class token) or ``"avg"`` (mean of patch tokens); defaults to the
            architecture's own (``avg`` for QnA, which has no class token).
        drop_rate: dropout before the head. drop_path_rate: stochastic depth, linearly over blocks.

    Shapes: (B, in_chans, H, W) -> (B, num_classes) logits.

    Raises:
        GeneError: invalid genes, or ``img_size`` not divisible by ``patch_size``; ``img_size`` over
            ``MAX_IMG_SIZE`` px a side or ``MAX_TOKENS`` tokens, ``in_chans`` or ``num_classes`` out of
            range, or an estimated parameter count over ``MAX_PARAMS`` (checked before allocating).
    """

    def __init__(self, arch: Architecture | Mapping[str, Any] | str | None = None, img_size: int | tuple[int, int] = 32,
                 in_chans: int = 3, num_classes: int = 10, global_pool: str | None = None,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, **kwargs: Any):
        super().__init__()
        kwargs.pop("pretrained_cfg", None)
        kwargs.pop("pretrained_cfg_overlay", None)
        if kwargs:
            raise TypeError(f"nas_vit: unexpected arguments {sorted(kwargs)}")
        self.arch = arch = _as_arch(arch)
        img_size, grid = _check_args(arch, img_size, in_chans, num_classes)
        self.img_size = img_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = self.embed_dim = arch.embed_dim
        self.global_pool = self._check_pool(global_pool)
        self.grad_checkpointing = False

        self.patch_embed = build_stem(arch.stem, img_size, arch.patch_size, in_chans, arch.embed_dim)
        # timm reads the input stem's name from the model's traits when it adapts a checkpoint to other
        # input channels (load_pretrained -> adapt_input_conv); the stem decides which convolution is first.
        first_conv = next(f"patch_embed.{n}" for n, m in self.patch_embed.named_modules() if isinstance(m, nn.Conv2d))
        self._traits = {"first_conv": first_conv}
        self.num_prefix_tokens = 1 if arch.class_token else 0
        self.cls_token = nn.Parameter(torch.zeros(1, 1, arch.embed_dim)) if arch.class_token else None
        num_patches = grid[0] * grid[1]
        if arch.pos_encoding == "learned":
            self.pos_embed = nn.Parameter(torch.zeros(1, self.num_prefix_tokens + num_patches, arch.embed_dim))
        else:
            self.pos_embed = None
        if arch.pos_encoding == "sincos2d":
            table = build_sincos2d_pos_embed(list(grid), dim=arch.embed_dim)
            self.register_buffer("sincos_embed", table.unsqueeze(0), persistent=False)
        else:
            self.sincos_embed = None
        self.rope = Rotary(arch.pos_encoding, arch.head_dim, grid) if arch.pos_encoding in ("rope1d", "rope2d") else None
        self.layout = TokenLayout(grid=grid, num_prefix_tokens=self.num_prefix_tokens, rotary=self.rope)

        # Stochastic-depth rate rising linearly over the blocks (as torch.linspace; plain floats, so the
        # model also builds on the meta device).
        dpr = [drop_path_rate * i / max(arch.depth - 1, 1) for i in range(arch.depth)]
        self.blocks = nn.ModuleList(Block(arch, i, self.layout, dpr[i]) for i in range(arch.depth))
        self.norm = nn.LayerNorm(arch.embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(arch.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self.head_hidden_size = arch.embed_dim
        self.feature_info = [dict(module=f"blocks.{i}", num_chs=arch.embed_dim, reduction=arch.patch_size)
                             for i in range(arch.depth)]
        self._init_weights()

    def _check_pool(self, global_pool: str | None) -> str:
        """``token``, ``avg`` or ``''`` (no pooling: the head sees every token); None: the architecture's own."""
        if global_pool is None:
            return "token" if self.arch.class_token else "avg"
        if global_pool not in ("token", "avg", ""):
            raise ValueError(f"global_pool: must be 'token', 'avg' or '', got {global_pool!r}")
        if global_pool == "token" and not self.arch.class_token:
            raise ValueError(f"global_pool: {self.arch.attention} has no class token; use 'avg'")
        return global_pool

    def _init_weights(self) -> None:
        if any(p.is_meta for p in self.parameters()):
            # Built on the meta device (exact parameter counts, e.g. search_spaces.extremes): meta tensors hold
            # no values, so initialising them changes nothing, and it is most of the build's time there.
            return
        if self.pos_embed is not None:
            trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)
        for name, module in self.named_modules():
            init_weights_vit_timm(module, name)
        # Mechanism-specific parameters (QnA queries, Refiner kernels, ...) in a second pass, so the generic
        # init above never overwrites them.
        for module in self.modules():
            if isinstance(module, AttentionModule):
                module.reset_parameters_extra()

    # ------------------------------------------------------------------ timm model API
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        """Parameters AdamW should not decay (timm's ViT convention): the position embedding and class token."""
        return {name for name in ("pos_embed", "cls_token") if getattr(self, name) is not None}

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        """Parameter groups for layer-wise learning-rate decay (timm's ``param_groups_layer_decay``): the stem
        and embeddings first, then one group per block, the final norm last (as timm's ViT)."""
        return dict(stem=r"^cls_token|pos_embed|patch_embed",
                    blocks=[(r"^blocks\.(\d+)", None), (r"^norm", (99999,))])

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass (less memory, more compute)."""
        self.grad_checkpointing = enable

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        """A new head with ``num_classes`` outputs (0: none); ``global_pool`` as in the constructor."""
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = self._check_pool(global_pool)
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, N, C) tokens with position information, class token first."""
        x = self.patch_embed(x)
        if self.sincos_embed is not None:
            x = x + self.sincos_embed.to(x.dtype)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        return x

    def _block(self, block: Block, x: torch.Tensor) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled() and not torch.jit.is_scripting():
            return checkpoint(block, x, self.layout, use_reentrant=False)
        return block(x, self.layout)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, N, C) normalised tokens (class token first when there is one)."""
        x = self._embed(x)
        for block in self.blocks:
            x = self._block(block, x)
        return self.norm(x)

    def forward_intermediates(self, x: torch.Tensor, indices: int | list[int] | None = None,
                              return_prefix_tokens: bool = False, norm: bool = False, stop_early: bool = False,
                              output_fmt: str = "NCHW", intermediates_only: bool = False):
        """The outputs of chosen blocks, as timm's ViT gives them (the backbone contract of ``features_only``).

        Args:
            indices: the last ``n`` blocks (an int) or block indices (negative from the end); None: all.
            return_prefix_tokens: pair each intermediate with its prefix (class) tokens (B, 1, C).
            norm: apply the final norm to each intermediate. stop_early: run no block past the last one taken.
            output_fmt: ``NCHW`` (B, C, rows, cols) or ``NLC`` (B, rows * cols, C); prefix tokens are stripped.
            intermediates_only: return the intermediates alone.

        Returns:
            ``(final normalised tokens (B, N, C), intermediates)``, or the intermediates alone.

        Raises:
            ValueError: an ``output_fmt`` other than NCHW or NLC; ``indices`` outside the blocks.
        """
        if output_fmt not in ("NCHW", "NLC"):
            raise ValueError(f"output_fmt: must be 'NCHW' or 'NLC', got {output_fmt!r}")
        take, last = feature_take_indices(len(self.blocks), indices)
        x = self._embed(x)
        blocks = self.blocks[:last + 1] if stop_early else self.blocks
        taken = []
        for i, block in enumerate(blocks):
            x = self._block(block, x)
            if i in take:
                taken.append(self.norm(x) if norm else x)
        p = self.num_prefix_tokens
        prefixes = [y[:, :p] for y in taken]
        taken = [y[:, p:] for y in taken]
        if output_fmt == "NCHW":
            rows, cols = self.layout.grid
            taken = [y.reshape(y.shape[0], rows, cols, -1).permute(0, 3, 1, 2).contiguous() for y in taken]
        if return_prefix_tokens and p:
            taken = list(zip(taken, prefixes))
        if intermediates_only:
            return taken
        return self.norm(x), taken

    def prune_intermediate_layers(self, indices: int | list[int] = 1, prune_norm: bool = False,
                                  prune_head: bool = True) -> list[int]:
        """Drop the blocks after the last one ``indices`` takes (and the norm and head if asked); the kept indices.

        Raises:
            ValueError: ``indices`` outside the blocks (see :func:`feature_take_indices`).
        """
        take, last = feature_take_indices(len(self.blocks), indices)
        self.blocks = self.blocks[:last + 1]
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, C) -> (B, num_classes), or (B, C) with ``pre_logits`` (tokens kept with ``global_pool=''``)."""
        if self.global_pool == "token":
            x = x[:, 0]
        elif self.global_pool == "avg":
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def checkpoint_filter_fn(state_dict: dict[str, torch.Tensor], model: NasViT) -> dict[str, torch.Tensor]:
    """Adapt a ``nas_vit`` state dict to ``model`` built at another shape (timm's ``pretrained_filter_fn``).

    - ``pos_embed`` (learned position embedding) is resampled to the model's token grid with timm's
      ``resample_abs_pos_embed`` (bicubic, antialiased; prefix tokens kept), as timm does for its ViT. The
      source grid is taken as square.
    - Other input channels: timm adapts the first convolution itself (``adapt_input_conv``), from the
      model's ``first_conv`` trait and the checkpoint's ``input_size``.
    - Another ``num_classes``: timm drops the head.
    - Mechanisms tied to a token count (the registry's ``fixed_tokens``: Linformer's token projection,
      Mixer's token MLP) have learned weights per token position: there is no meaningful resampling of a
      learned projection from N to N' tokens, so loading them at another token count is refused.

    Raises:
        ValueError: a token-tied mechanism at another token count, or a position embedding whose source
            grid is not square (one line naming the mechanism or the field).
    """
    from timm.layers import resample_abs_pos_embed

    spec = registry.get_mechanism(model.arch.attention)
    own = model.state_dict()
    out = {}
    for key, value in state_dict.items():
        if key == "pos_embed" and model.pos_embed is not None and value.shape != model.pos_embed.shape:
            patches = value.shape[1] - model.num_prefix_tokens
            side = int(round(patches ** 0.5))
            if side * side != patches:
                raise ValueError(f"img_size: the checkpoint's position embedding has {patches} patch tokens, "
                                 "not a square grid; load it at its own image size")
            value = resample_abs_pos_embed(value, new_size=list(model.layout.grid), old_size=[side, side],
                                           num_prefix_tokens=model.num_prefix_tokens)
        elif spec.fixed_tokens and key.startswith("blocks.") and key in own and value.shape != own[key].shape:
            raise ValueError(f"img_size: {spec.name} is tied to the token count it was trained at ({key} has shape "
                             f"{tuple(value.shape)}, this model needs {tuple(own[key].shape)}); load it at its own "
                             "img_size and patch_size")
        out[key] = value
    return out


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 10, "input_size": (3, 32, 32), "pool_size": None,
        "crop_pct": 1.0, "interpolation": "bilinear", "fixed_input_size": True,
        "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
        "first_conv": "patch_embed.proj", "classifier": "head", "license": "apache-2.0", **kwargs,
    }


default_cfgs = generate_default_cfgs({"nas_vit.untrained": _cfg()})


@register_model
def nas_vit(pretrained: bool = False, **kwargs: Any) -> NasViT:
    """timm entry point: ``timm.create_model("nas_vit", arch={...}, img_size=..., in_chans=..., num_classes=...)``.

    ``arch`` is a mapping of genes (see :class:`~search_spaces.genes.Architecture`), an Architecture,
    or a preset name. There are no hub weights; a ``local-dir:`` export (``vitnas export``) always comes
    with its trained weights, so ``timm.create_model("local-dir:DIR")`` loads them without
    ``pretrained=True``.
    """
    cfg = kwargs.get("pretrained_cfg")
    source = cfg.get("source") if isinstance(cfg, dict) else getattr(cfg, "source", None)
    if source == "local-dir":
        pretrained = True
    # features_only: timm's FeatureGetterNet over forward_intermediates, the last 3 blocks by default.
    depth = _as_arch(kwargs.get("arch")).depth
    out_indices = kwargs.pop("out_indices", min(3, depth))
    return build_model_with_cfg(NasViT, "nas_vit", pretrained, pretrained_filter_fn=checkpoint_filter_fn,
                                feature_cfg=dict(out_indices=out_indices, feature_cls="getter"), **kwargs)


def build_model(arch: Architecture | Mapping[str, Any] | str, img_size: int | tuple[int, int] = 32,
                in_chans: int = 3, num_classes: int = 10, **kwargs: Any) -> NasViT:
    """Build the model for ``arch`` through timm's factory (so it carries a pretrained_cfg).

    Raises:
        GeneError: invalid genes or an image size the patch size does not divide.
    """
    import timm

    arch = _as_arch(arch)
    return timm.create_model("nas_vit", arch=arch.to_dict(), img_size=img_size, in_chans=in_chans,
                             num_classes=num_classes, **kwargs)
