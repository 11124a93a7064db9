"""The model builder: one :class:`~search_spaces.genes.Architecture` in, one vision transformer out.

Registered with timm as ``nas_vit``, so a searched design is an ordinary timm model::

    import search_spaces, timm
    m = timm.create_model("nas_vit", arch={"attention": "mhsa", "embed_dim": 64}, num_classes=10,
                          img_size=16, in_chans=1)

The body is the pre-norm ViT block (ViT, arXiv 2010.11929, eq. 2-3): ``x + attn(LN(x))`` then
``x + mlp(LN(x))``, with the attention taken from the zoo (:mod:`search_spaces.attention`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from timm.layers import DropPath, Mlp, build_sincos2d_pos_embed, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.vision_transformer import init_weights_vit_timm
from torch import nn

from .attention import build_attention
from .attention.common import AttentionModule, Rotary, TokenLayout
from .genes import Architecture, GeneError
from .stems import build_stem

__all__ = ["NasViT", "Block", "build_model", "nas_vit"]


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


def _as_arch(arch: Architecture | Mapping[str, Any] | str | None) -> Architecture:
    if arch is None:
        return Architecture()
    if isinstance(arch, Architecture):
        return arch
    if isinstance(arch, str):
        from .presets import get_preset  # local import: presets import this module's neighbours
        return get_preset(arch)
    return Architecture.from_dict(arch)


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
        GeneError: invalid genes, or ``img_size`` not divisible by ``patch_size``.
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
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        grid = arch.check_image(img_size)
        if arch.pos_encoding == "sincos2d" and arch.embed_dim % 4:
            raise GeneError(f"pos_encoding: sincos2d needs embed_dim divisible by 4, got {arch.embed_dim}")
        self.img_size = img_size
        self.in_chans = in_chans
        self.num_classes = num_classes
        self.num_features = self.embed_dim = arch.embed_dim
        default_pool = "token" if arch.class_token else "avg"
        self.global_pool = global_pool or default_pool
        if self.global_pool not in ("token", "avg"):
            raise ValueError(f"global_pool: must be 'token' or 'avg', got {self.global_pool!r}")
        if self.global_pool == "token" and not arch.class_token:
            raise ValueError(f"global_pool: {arch.attention} has no class token; use 'avg'")

        self.patch_embed = build_stem(arch.stem, img_size, arch.patch_size, in_chans, arch.embed_dim)
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

        dpr = torch.linspace(0, drop_path_rate, arch.depth).tolist()
        self.blocks = nn.ModuleList(Block(arch, i, self.layout, dpr[i]) for i in range(arch.depth))
        self.norm = nn.LayerNorm(arch.embed_dim, eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(arch.embed_dim, num_classes) if num_classes > 0 else nn.Identity()
        self._init_weights()

    def _init_weights(self) -> None:
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
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.embed_dim, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, in_chans, H, W) -> (B, N, C) normalised tokens (class token first when there is one)."""
        x = self.patch_embed(x)
        if self.sincos_embed is not None:
            x = x + self.sincos_embed.to(x.dtype)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        for block in self.blocks:
            x = block(x, self.layout)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, C) -> (B, num_classes), or (B, C) with ``pre_logits``."""
        if self.global_pool == "token":
            x = x[:, 0]
        else:
            x = x[:, self.num_prefix_tokens:].mean(dim=1)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "", "num_classes": 10, "input_size": (3, 32, 32), "pool_size": None,
        "crop_pct": 1.0, "interpolation": "bilinear", "fixed_input_size": True,
        "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5),
        "first_conv": "", "classifier": "head", **kwargs,
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
    return build_model_with_cfg(NasViT, "nas_vit", pretrained, feature_cfg=None, **kwargs)


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
