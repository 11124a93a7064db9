"""Stems: how pixels become patch tokens.

- ``patch``: linear patchify (ViT, arXiv 2010.11929), timm's ``PatchEmbed`` (a stride-p p x p
  convolution).
- ``conv``: Vision Xformers' hybrid stem (Jeevan and Sethi, arXiv 2107.02239): three 3x3 stride-1
  convolutions at full resolution, widths C/4 -> C/2 -> C, with no activation or normalisation between
  them, then the p x p patchify (see :class:`ConvStem` for how this follows the official code).
- ``conv_bn``: the convolutional stem of Xiao et al., "Early convolutions help transformers see
  better" (arXiv 2106.14881): log2(p) stride-2 3x3 convolutions with BatchNorm and ReLU, widths
  doubling up to C, ending in a 1x1 projection to ``embed_dim`` (see :class:`ConvBNStem`).

Every stem maps (B, in_chans, H, W) to (B, N, C) tokens with N = (H / p) * (W / p).
"""

from __future__ import annotations

import math

import torch
from timm.layers import PatchEmbed
from torch import nn

__all__ = ["build_stem", "ConvStem", "ConvBNStem"]


class ConvStem(nn.Module):
    """Vision Xformers' hybrid ("Hybrid ViX") stem: 3 x (3x3 conv, stride 1, padding 1), then patchify.

    Source: Jeevan and Sethi, "Vision Xformers: Efficient Attention for Image Classification", arXiv
    2107.02239, checked against the authors' code (github.com/pranavphoenix/VisionXformer, the
    ``Hybrid*`` CIFAR-10 models). There the stem of every hybrid model (ViT, Linformer, Performer,
    Nystromformer, FNet) is three 3x3 stride-1 convolutions with bias, 3 -> 32 -> 64 -> C channels for
    C = 128, with *no* nonlinearity and *no* normalisation between them; the feature map then becomes
    the token sequence directly (their models use patch size 1 on 32 x 32 images, so there is no
    projection after the convolutions).

    vitnas keeps the structure and scales the widths with C: ``in_chans -> C/4 -> C/2 -> C`` (the
    paper's 32, 64, 128 at C = 128), bias on every convolution, no activation, no norm (so, as in the
    original, the three convolutions compose to one linear 7x7 map, over-parameterised). Deliberate
    difference: the gene domain has patch sizes above 1, so for p > 1 a linear p x p stride-p patchify
    (timm ``PatchEmbed``, C -> C) follows; for p = 1 the feature map is flattened into tokens as in the
    original, with no projection.

    Shapes: (B, in_chans, H, W) -> (B, (H/p)(W/p), C).
    Parameters: ``9 (in_chans C/4 + C/4 C/2 + C/2 C) + 7C/4`` for the convolutions
    (+ ``p^2 C^2 + C`` for the patchify when p > 1), with C/4, C/2 rounded down (at least 1).
    """

    def __init__(self, img_size: tuple[int, int], patch_size: int, in_chans: int, embed_dim: int):
        super().__init__()
        w1, w2 = max(embed_dim // 4, 1), max(embed_dim // 2, 1)
        self.convs = nn.Sequential(
            nn.Conv2d(in_chans, w1, 3, stride=1, padding=1),
            nn.Conv2d(w1, w2, 3, stride=1, padding=1),
            nn.Conv2d(w2, embed_dim, 3, stride=1, padding=1),
        )
        if patch_size == 1:
            self.patchify = None
            self.grid_size = (img_size[0], img_size[1])
        else:
            self.patchify = PatchEmbed(img_size, patch_size, embed_dim, embed_dim)
            self.grid_size = self.patchify.grid_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.convs(x)
        if self.patchify is None:
            return x.flatten(2).transpose(1, 2)
        return self.patchify(x)


class ConvBNStem(nn.Module):
    """Early-convolution stem ("C-stem") of Xiao et al., "Early convolutions help transformers see
    better", arXiv 2106.14881 (section 3, Table 1).

    s = log2(p) blocks of (3x3 conv stride 2, padding 1, no bias; BatchNorm; ReLU), then one 1x1
    convolution (with bias, no norm or activation) to C. Widths double from block to block and the last
    3x3 block already has C channels: ``C / 2^(s-1), ..., C / 2, C`` (the paper's ViT-1GF C-stem is 24,
    48, 96, 192 for C = 192 and p = 16), then the 1x1 projection C -> C. For p = 1 only the 1x1
    projection remains. Widths are rounded down (at least 1). Not reproduced here: the paper also removes
    one transformer block to pay for the stem's FLOPs; vitnas leaves ``depth`` to the genes.

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
            c_out = max(embed_dim // 2 ** (steps - 1 - i), 1)
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
