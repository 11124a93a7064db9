"""Pieces shared by the attention mechanisms: the module protocol (:class:`AttentionModule`), the token
layout, rotary position encoding and the (optionally Armour-compact) Q, K, V projections.

Notation: B batch, N tokens (prefix tokens first, then the R x C patch grid in row-major order),
C channels (``embed_dim``), H heads, d = C / H (``head_dim``).
"""

from __future__ import annotations

import abc
import contextlib
from dataclasses import dataclass

import torch
from timm.layers import apply_rot_embed, build_rotary_pos_embed
from torch import nn

__all__ = ["AttentionModule", "TokenLayout", "WithLayout", "Rotary", "QKV", "split_heads", "merge_heads",
           "check_num_tokens"]


class Rotary(nn.Module):
    """Rotary position encoding (RoFormer, arXiv 2104.09864) applied to queries and keys.

    ``rope1d`` rotates interleaved channel pairs by the token's index in the flattened patch sequence
    (as Vision Xformers, arXiv 2107.02239, uses it); ``rope2d`` is axial: half of the head dimension
    rotates with the patch row, the other half with the column. Frequencies are
    ``10000^(-2i/d')`` over integer positions, built with timm's ``build_rotary_pos_embed``.
    Prefix (class) tokens are not rotated (a deliberate difference from Vision Xformers' code, which
    rotates the class token as position 0 of the sequence): the class token has no place on the grid. \
The score ``q_m . k_n`` after rotation depends on the
    positions only through ``m - n`` (per axis for ``rope2d``).

    Args:
        kind: ``"rope1d"`` or ``"rope2d"``.
        head_dim: d; even for ``rope1d``, a multiple of 4 for ``rope2d``.
        grid: (rows, cols) of the patch grid.

    Raises:
        ValueError: unknown ``kind`` or a ``head_dim`` the kind cannot split.
    """

    def __init__(self, kind: str, head_dim: int, grid: tuple[int, int]):
        super().__init__()
        if kind not in ("rope1d", "rope2d"):
            raise ValueError(f"pos_encoding: rotary kind must be rope1d or rope2d, got {kind!r}")
        step = 2 if kind == "rope1d" else 4
        if head_dim % step:
            raise ValueError(f"pos_encoding: {kind} needs head_dim divisible by {step}, got {head_dim}")
        self.kind = kind
        rows, cols = grid
        if kind == "rope1d":
            sin, cos = build_rotary_pos_embed([rows * cols], dim=2 * head_dim, in_pixels=False)
        else:
            sin, cos = build_rotary_pos_embed([rows, cols], dim=head_dim, in_pixels=False)
        self.register_buffer("sin", sin, persistent=False)  # (N_patch, d)
        self.register_buffer("cos", cos, persistent=False)

    def rotate(self, x: torch.Tensor, num_prefix_tokens: int) -> torch.Tensor:
        """Rotate ``x`` of shape (B, H, N, d); the first ``num_prefix_tokens`` stay as they are."""
        if num_prefix_tokens:
            prefix, patches = x[:, :, :num_prefix_tokens], x[:, :, num_prefix_tokens:]
            return torch.cat([prefix, apply_rot_embed(patches, self.sin, self.cos)], dim=2)
        return apply_rot_embed(x, self.sin, self.cos)


@dataclass
class TokenLayout:
    """What an attention layer may need to know about the token sequence besides the tensor.

    Attributes:
        grid: (rows, cols) of the patch grid; N = num_prefix_tokens + rows * cols.
        num_prefix_tokens: class tokens in front of the patch tokens (0 or 1).
        rotary: the model's rotary encoding, or ``None`` when the position encoding is not RoPE.
    """

    grid: tuple[int, int]
    num_prefix_tokens: int = 0
    rotary: Rotary | None = None

    @property
    def num_tokens(self) -> int:
        """N = num_prefix_tokens + rows * cols."""
        return self.num_prefix_tokens + self.grid[0] * self.grid[1]

    @classmethod
    def flat(cls, num_tokens: int) -> TokenLayout:
        """A plain sequence of N = ``num_tokens`` tokens (a 1 x N grid, no prefix, no rotary encoding),
        for mechanisms that do not look at the grid."""
        return cls(grid=(1, num_tokens))


class AttentionModule(nn.Module, metaclass=abc.ABCMeta):
    """The protocol every mechanism of the zoo implements (its spec in :mod:`search_spaces.registry`
    names the subclass).

    - ``forward(x, layout)``: ``x`` (B, N, C) tokens, ``layout`` the required :class:`TokenLayout` of
      those N tokens; returns (B, N, C).
    - ``macs(layout)``: analytic multiply-adds per image (one multiply-add = 1, fvcore's convention) at
      the token count of ``layout``; each subclass's docstring gives its formula.
    - ``reset_parameters_extra()``: (re-)initialise the mechanism's own parameters. The model calls it
      on every attention module after timm's generic ViT init, which would otherwise overwrite them
      (QnA's queries, the Refiner's kernels, Linformer's token projection). Default: nothing.
    """

    @abc.abstractmethod
    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """(B, N, C) -> (B, N, C)."""

    @abc.abstractmethod
    def macs(self, layout: TokenLayout) -> int:
        """Analytic multiply-adds per image for the N = ``layout.num_tokens`` tokens of ``layout``."""

    def reset_parameters_extra(self) -> None:
        """Initialise the mechanism's own parameters (none here)."""


class WithLayout(nn.Module):
    """A mechanism with its :class:`TokenLayout` bound, so that it takes the tokens alone, for tools that
    trace tensor inputs only (fvcore's ``FlopCountAnalysis``, ``torch.jit.trace``).

    Shapes: ``x`` (B, N, C) -> (B, N, C), N = ``layout.num_tokens``.
    """

    def __init__(self, attn: AttentionModule, layout: TokenLayout):
        super().__init__()
        self.attn = attn
        self.layout = layout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, self.layout)


def check_num_tokens(name: str, what: str, built: int, n: int) -> None:
    """For mechanisms tied to a fixed token count (Linformer, Mixer): N must be the built count.

    Raises:
        ValueError: ``n`` (the N of a (B, N, C) input or of a layout) differs from ``built``; the message
            names the mechanism and ``what`` is tied.
    """
    if not isinstance(n, torch.fx.Proxy) and n != built:  # symbolic under torch.fx: checked when run eagerly
        raise ValueError(f"{name}: built for {built} tokens, got {n}; {what} is tied to the image size "
                         "(and patch size) the model was built for")


def full_precision(x: torch.Tensor) -> contextlib.AbstractContextManager:
    """A context with autocast off on ``x``'s device, for the parts of a mechanism that must run in fp32
    (exponentials, FFTs, pseudo-inverses). Under ``torch.fx`` tracing the device is symbolic: the context is
    then a no-op (the explicit ``.float()`` casts are still recorded in the graph)."""
    if isinstance(x, torch.fx.Proxy):
        return contextlib.nullcontext()
    return torch.autocast(device_type=x.device.type, enabled=False)


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, C) -> (B, H, N, d)."""
    b, n, c = x.shape
    return x.view(b, n, num_heads, c // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, d) -> (B, N, C)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class QKV(nn.Module):
    """Query, key and value projections, with the Armour ``compact`` modifier.

    Regular: ``q, k, v = x W_q, x W_k, x W_v`` through one fused ``qkv`` linear layer (3C^2 + 3C
    parameters), as timm's ViT names it.

    Compact (Armour, arXiv 2108.01778 — an *interpretation*: only the abstract could be read). In
    ``softmax(x W_q (x W_k)^T) x W_v W_o`` only the products ``W_q W_k^T`` (per head) and ``W_v W_o``
    reach the output, so one factor of each pair is redundant. Compact attention keeps ``W_q`` and the
    output projection and drops ``W_k`` and ``W_v``: head h takes its keys and values from its own slice
    ``x[..., h d:(h+1) d]`` of the (already layer-normalised) input. Parameters: C^2 + C here, so the
    attention layer falls from 4C^2 to 2C^2 (+ biases). With one head this is an exact
    re-parametrisation; with H > 1 heads it is a restriction (each head's keys and values come from its
    own d channels of the input instead of a learned mix of all C), so compact models can lose capacity.

    Rotary encoding, when the layout carries one, is applied to q and k after projection.

    Shapes: ``x`` (B, N, C) -> q, k, v each (B, H, N, d).
    """

    def __init__(self, dim: int, num_heads: int, compact: bool = False, qkv_bias: bool = True):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"num_heads: embed_dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.compact = compact
        if compact:
            self.q = nn.Linear(dim, dim, bias=qkv_bias)
        else:
            self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)

    def macs(self, num_tokens: int) -> int:
        """Multiply-adds of the projections for N = ``num_tokens`` tokens: 3 N C^2, or N C^2 compact."""
        return (1 if self.compact else 3) * num_tokens * self.dim * self.dim

    def forward(self, x: torch.Tensor, layout: TokenLayout | None = None):
        """q, k, v (B, H, N, d) each from ``x`` (B, N, C); rotated when ``layout`` carries a rotary encoding."""
        b, n, c = x.shape
        h = self.num_heads
        if self.compact:
            q = split_heads(self.q(x), h)
            k = v = split_heads(x, h)
        else:
            q, k, v = self.qkv(x).view(b, n, 3, h, c // h).permute(2, 0, 3, 1, 4).unbind(0)
        if layout is not None and layout.rotary is not None:
            q = layout.rotary.rotate(q, layout.num_prefix_tokens)
            k = layout.rotary.rotate(k, layout.num_prefix_tokens)
        return q, k, v
