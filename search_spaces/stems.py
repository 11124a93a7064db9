"""Stems: how pixels become patch tokens.

- ``patch``: linear patchify (ViT, arXiv 2010.11929), timm's ``PatchEmbed`` (a stride-p p x p
  convolution).
- ``conv``: Vision Xformers' hybrid stem (arXiv 2107.02239): three 3x3 convolutions at full
  resolution (stride 1, ReLU between them) before the linear patchify.
- ``conv_bn``: early convolutions (Xiao et al., "Early convolutions help transformers see better",
  arXiv 2106.14881, as Refiner's convolutional variants use them): log2(p) stride-2 3x3 convolutions with
  BatchNorm and ReLU, ending in a 1x1 projection to ``embed_dim``.

Every stem maps (B, in_chans, H, W) to (B, N, C) tokens with N = (H / p) * (W / p).
"""

from __future__ import annotations

import math

import torch
from timm.layers import PatchEmbed
from torch import nn

__all__ = ["build_stem", "ConvStem", "ConvBNStem"]


class ConvStem(nn.Module):
    """Vision Xformers hybrid stem: 3 x (3x3 conv, stride 1) then a linear p x p patchify.

    Widths: ``in_chans -> C/4 -> C/2 -> C/2`` channels (ReLU after each), then ``PatchEmbed`` to C.
    Shapes: (B, in_chans, H, W) -> (B, (H/p)(W/p), C).
    """

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        w1, w2 = max(embed_dim // 4, 8), max(embed_dim // 2, 8)
        self.convs = nn.Sequential(
            nn.Conv2d(in_chans, w1, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w1, w2, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(w2, w2, 3, padding=1), nn.ReLU(inplace=True),
        )
        self.patchify = PatchEmbed(img_size, patch_size, w2, embed_dim)
        self.grid_size = self.patchify.grid_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.patchify(self.convs(x))


class ConvBNStem(nn.Module):
    """Early-convolution stem: log2(p) x (3x3 conv stride 2, BatchNorm, ReLU), then a 1x1 projection.

    Widths double from C / 2^(s) up to C over the s = log2(p) stride-2 convolutions (at least 8).
    Shapes: (B, in_chans, H, W) -> (B, (H/p)(W/p), C).

    Raises:
        ValueError: ``patch_size`` is not a power of two.
    """

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        if patch_size < 1 or patch_size & (patch_size - 1):
            raise ValueError(f"stem: conv_bn needs a power-of-two patch_size, got {patch_size}")
        steps = int(math.log2(patch_size))
        layers: list[nn.Module] = []
        c_in = in_chans
        for i in range(steps):
            c_out = max(embed_dim // 2 ** (steps - i), 8)
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, embed_dim, 1))
        self.convs = nn.Sequential(*layers)
        self.grid_size = (img_size[0] // patch_size, img_size[1] // patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convs(x).flatten(2).transpose(1, 2)


def build_stem(stem: str, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int) -> nn.Module:
    """The stem module named by the ``stem`` gene; it has a ``grid_size`` attribute (rows, cols).

    Raises:
        ValueError: unknown ``stem``.
    """
    if stem == "patch":
        return PatchEmbed(img_size, patch_size, in_chans, embed_dim)
    if stem == "conv":
        return ConvStem(img_size, patch_size, in_chans, embed_dim)
    if stem == "conv_bn":
        return ConvBNStem(img_size, patch_size, in_chans, embed_dim)
    raise ValueError(f"stem: unknown value {stem!r}; allowed: patch, conv, conv_bn")
