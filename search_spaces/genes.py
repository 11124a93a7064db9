"""The architecture record: one frozen dataclass of genes that crosses every layer of vitnas.

The sampler produces an :class:`Architecture`, the builder consumes it, a trial stores it as an Optuna
user attribute (``arch``), the dashboard shows it and the export writes it as timm ``model_args``. It
round-trips through JSON unchanged (:meth:`Architecture.to_json` / :meth:`Architecture.from_json`).

The rules saying which gene applies to which attention mechanism live here, in one place
(:data:`RULES`, :func:`applicable_genes`, :meth:`Architecture.validate`); the search space, the
builder and ``vitnas space`` all read them from here.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

__all__ = [
    "ATTENTIONS",
    "QKV_ATTENTIONS",
    "ROPE_ATTENTIONS",
    "FIXED_TOKEN_ATTENTIONS",
    "POS_ENCODINGS",
    "STEMS",
    "MASK_RATIO_CHOICES",
    "QNA_WINDOWS",
    "REFINER_EXPANSIONS",
    "MASK_LAYERS",
    "RULES",
    "GeneError",
    "Architecture",
    "applicable_genes",
]

#: Every attention mechanism of the zoo (DESIGN.md, "The attention zoo").
ATTENTIONS: tuple[str, ...] = (
    "mhsa", "mait", "refiner", "qna", "performer", "linformer", "nystrom", "fnet", "mixer",
)
#: Mechanisms with Q, K and V projections: the Armour ``compact`` modifier applies to them.
QKV_ATTENTIONS: frozenset[str] = frozenset({"mhsa", "mait", "refiner", "performer", "linformer", "nystrom"})
#: Mechanisms with per-token queries and keys: rotary position encodings apply to them.
ROPE_ATTENTIONS: frozenset[str] = QKV_ATTENTIONS
#: Mechanisms whose weights are tied to a fixed token count N.
FIXED_TOKEN_ATTENTIONS: frozenset[str] = frozenset({"linformer", "mixer"})
#: Mechanisms that need the explicit N x N score map (no fused attention kernel).
EXPLICIT_MAP_ATTENTIONS: frozenset[str] = frozenset({"mait", "refiner"})
#: Mechanisms working on the 2-D token grid with no class token (the model pools by global average).
NO_CLASS_TOKEN_ATTENTIONS: frozenset[str] = frozenset({"qna"})

POS_ENCODINGS: tuple[str, ...] = ("learned", "sincos2d", "rope1d", "rope2d", "none")
ROPE_ENCODINGS: frozenset[str] = frozenset({"rope1d", "rope2d"})
STEMS: tuple[str, ...] = ("patch", "conv", "conv_bn")
MASK_RATIO_CHOICES: tuple[float, ...] = (0.0, 0.5, 0.75, 0.9)
QNA_WINDOWS: tuple[int, ...] = (3, 5, 7)
REFINER_EXPANSIONS: tuple[int, ...] = (1, 2, 3, 4, 6)
#: Which layers of a MaiT model carry masks: ``all`` layers use ``mask_ratios`` as given; ``paper``
#: follows MaiT's finding (all masked heads in the first third, one in the middle third, none last).
MASK_LAYERS: tuple[str, ...] = ("all", "paper")

#: Human-readable rules, one per line, as ``vitnas space`` prints them.
RULES: tuple[tuple[str, str], ...] = (
    ("compact", "only for attention with Q, K, V projections: " + ", ".join(sorted(QKV_ATTENTIONS))),
    ("mask_ratios", "mait only: one ratio per head, each in {0, 0.5, 0.75, 0.9}; 0 = global head"),
    ("mask_layers", "mait only: 'all' masks every layer, 'paper' masks early layers most (MaiT)"),
    ("qna_window", "qna only (required): 3, 5 or 7"),
    ("refiner_expansion", "refiner only (required): 1, 2, 3, 4 or 6"),
    ("pos_encoding", "rope1d/rope2d only where there are Q and K: " + ", ".join(sorted(ROPE_ATTENTIONS))),
    ("head_dim", "embed_dim divisible by num_heads; rope1d needs an even head_dim, rope2d a multiple of 4"),
    ("embed_dim", "sincos2d needs embed_dim divisible by 4 (a sine and a cosine per axis)"),
    ("stem", "conv_bn needs a power-of-two patch_size (one stride-2 convolution per halving)"),
    ("class token", "qna has none: the model pools by global average; all others use a class token"),
    ("token count", "linformer and mixer are tied to the token count of the image size they were built for"),
)


class GeneError(ValueError):
    """A gene value outside its domain or a combination that breaks a rule.

    The message names the gene and what is allowed, on one line.
    """


def applicable_genes(attention: str) -> frozenset[str]:
    """Names of the attention-specific genes that apply to ``attention``.

    Raises:
        GeneError: ``attention`` is not one of :data:`ATTENTIONS`.
    """
    if attention not in ATTENTIONS:
        raise GeneError(f"attention: unknown value {attention!r}; allowed: {', '.join(ATTENTIONS)}")
    genes = set()
    if attention in QKV_ATTENTIONS:
        genes.add("compact")
    if attention == "mait":
        genes |= {"mask_ratios", "mask_layers"}
    if attention == "qna":
        genes.add("qna_window")
    if attention == "refiner":
        genes.add("refiner_expansion")
    return frozenset(genes)


def _is_power_of_two(n: int) -> bool:
    return n > 0 and (n & (n - 1)) == 0


@dataclass(frozen=True)
class Architecture:
    """The genes of one vision transformer.

    Macro shape (ViT, arXiv 2010.11929; DeiT, arXiv 2012.12877): ``embed_dim`` (C), ``depth`` (blocks),
    ``num_heads`` (H, so ``head_dim`` d = C / H), ``mlp_ratio`` (hidden width of the MLP / C) and
    ``patch_size`` (pixels per side of a patch). Attention genes: ``attention`` (the mechanism),
    ``compact`` (Armour, arXiv 2108.01778), ``mask_ratios`` and ``mask_layers`` (MaiT, arXiv 2207.03006),
    ``qna_window`` (QnA, arXiv 2112.11435), ``refiner_expansion`` (Refiner, arXiv 2106.03714).
    ``pos_encoding`` and ``stem`` come from ViT and Vision Xformers (arXiv 2107.02239).

    Genes that do not apply to the chosen attention keep their neutral value (``compact=False``,
    ``mask_ratios=()``, ``mask_layers="all"``, ``qna_window=None``, ``refiner_expansion=None``);
    construction validates everything and raises :class:`GeneError` (a ``ValueError``) naming the gene.
    """

    attention: str = "mhsa"
    embed_dim: int = 64
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 2.0
    patch_size: int = 2
    pos_encoding: str = "learned"
    stem: str = "patch"
    compact: bool = False
    mask_ratios: tuple[float, ...] = field(default=())
    mask_layers: str = "all"
    qna_window: int | None = None
    refiner_expansion: int | None = None

    def __post_init__(self) -> None:
        # Normalise JSON-ish inputs (lists, ints for floats) so equal genes compare and hash equal.
        object.__setattr__(self, "mask_ratios", tuple(float(r) for r in self.mask_ratios))
        if isinstance(self.mlp_ratio, (int, float)) and not isinstance(self.mlp_ratio, bool):
            object.__setattr__(self, "mlp_ratio", float(self.mlp_ratio))
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every gene against its domain and every rule of :data:`RULES`.

        Raises:
            GeneError: one line naming the gene and what is allowed.
        """
        for name in ("embed_dim", "depth", "num_heads", "patch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise GeneError(f"{name}: must be a positive integer, got {value!r}")
        if not isinstance(self.mlp_ratio, float) or not (0 < self.mlp_ratio <= 16):
            raise GeneError(f"mlp_ratio: must be a number in (0, 16], got {self.mlp_ratio!r}")
        applicable_genes(self.attention)  # raises on unknown attention
        if self.pos_encoding not in POS_ENCODINGS:
            raise GeneError(f"pos_encoding: unknown value {self.pos_encoding!r}; allowed: {', '.join(POS_ENCODINGS)}")
        if self.stem not in STEMS:
            raise GeneError(f"stem: unknown value {self.stem!r}; allowed: {', '.join(STEMS)}")
        if not isinstance(self.compact, bool):
            raise GeneError(f"compact: must be true or false, got {self.compact!r}")
        if self.mask_layers not in MASK_LAYERS:
            raise GeneError(f"mask_layers: unknown value {self.mask_layers!r}; allowed: {', '.join(MASK_LAYERS)}")
        if self.embed_dim % self.num_heads:
            raise GeneError(
                f"num_heads: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}; "
                "choose num_heads among the divisors of embed_dim"
            )
        head_dim = self.embed_dim // self.num_heads
        # Attention-specific genes.
        a = self.attention
        if self.compact and a not in QKV_ATTENTIONS:
            raise GeneError(f"compact: applies only to {', '.join(sorted(QKV_ATTENTIONS))}, not to {a!r}")
        if a == "mait":
            if len(self.mask_ratios) != self.num_heads:
                raise GeneError(
                    f"mask_ratios: mait needs one ratio per head ({self.num_heads}), got {len(self.mask_ratios)}"
                )
            bad = [r for r in self.mask_ratios if r not in MASK_RATIO_CHOICES]
            if bad:
                raise GeneError(f"mask_ratios: {bad[0]!r} not allowed; each ratio in {{0, 0.5, 0.75, 0.9}}")
        else:
            if self.mask_ratios:
                raise GeneError(f"mask_ratios: applies only to mait, not to {a!r}; leave it empty")
            if self.mask_layers != "all":
                raise GeneError(f"mask_layers: applies only to mait, not to {a!r}")
        if a == "qna":
            if self.qna_window not in QNA_WINDOWS:
                raise GeneError(f"qna_window: qna needs a window in {{3, 5, 7}}, got {self.qna_window!r}")
        elif self.qna_window is not None:
            raise GeneError(f"qna_window: applies only to qna, not to {a!r}; leave it null")
        if a == "refiner":
            if self.refiner_expansion not in REFINER_EXPANSIONS:
                raise GeneError(
                    f"refiner_expansion: refiner needs an expansion in {{1, 2, 3, 4, 6}}, got {self.refiner_expansion!r}"
                )
        elif self.refiner_expansion is not None:
            raise GeneError(f"refiner_expansion: applies only to refiner, not to {a!r}; leave it null")
        # Position encoding and stem rules.
        if self.pos_encoding in ROPE_ENCODINGS:
            if a not in ROPE_ATTENTIONS:
                raise GeneError(
                    f"pos_encoding: {self.pos_encoding} needs queries and keys; {a!r} has none "
                    "(allowed: learned, sincos2d, none)"
                )
            step = 2 if self.pos_encoding == "rope1d" else 4
            if head_dim % step:
                raise GeneError(
                    f"pos_encoding: {self.pos_encoding} needs head_dim divisible by {step}, got {head_dim}"
                )
        if self.pos_encoding == "sincos2d" and self.embed_dim % 4:
            raise GeneError(f"pos_encoding: sincos2d needs embed_dim divisible by 4, got {self.embed_dim}")
        if self.stem == "conv_bn" and not _is_power_of_two(self.patch_size):
            raise GeneError(f"stem: conv_bn needs a power-of-two patch_size, got {self.patch_size}")

    # ------------------------------------------------------------------ derived facts
    @property
    def head_dim(self) -> int:
        """d = embed_dim / num_heads."""
        return self.embed_dim // self.num_heads

    @property
    def class_token(self) -> bool:
        """Whether the model prepends a class token (all but QnA, which pools by global average)."""
        return self.attention not in NO_CLASS_TOKEN_ATTENTIONS

    def check_image(self, img_size: int | tuple[int, int]) -> tuple[int, int]:
        """Token grid (rows, cols) for ``img_size`` pixels.

        Raises:
            GeneError: ``img_size`` is not divisible by ``patch_size``.
        """
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if h % self.patch_size or w % self.patch_size:
            raise GeneError(
                f"patch_size: img_size {h}x{w} is not divisible by patch_size {self.patch_size}; "
                "choose a patch_size that divides the image size"
            )
        return h // self.patch_size, w // self.patch_size

    # ------------------------------------------------------------------ (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able dict of every gene (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["mask_ratios"] = list(self.mask_ratios)
        return d

    def to_json(self) -> str:
        """Canonical JSON (sorted keys): equal architectures give equal strings."""
        return json.dumps(self.to_dict(), sort_keys=True)

    def key(self) -> str:
        """A canonical string identifying these genes (used to reuse results of identical genes)."""
        return self.to_json()

    def canonical_key(self, img_size: int | tuple[int, int]) -> str:
        """Like :meth:`key`, but equal for genes that build the same model at ``img_size``: FNet and
        Mixer ignore ``num_heads``, and MaiT mask ratios that map to the same window on the token grid
        (e.g. 0.75 and 0.9 on an 8x8 grid) are the same mask. Used to never train one model twice.

        Raises:
            GeneError: ``img_size`` is not divisible by ``patch_size``.
        """
        d = self.to_dict()
        if self.attention in ("fnet", "mixer"):
            d["num_heads"] = None
        if self.attention == "mait":
            grid = self.check_image(img_size)
            windows = [mait_window_for_ratio(r, grid) for r in self.mask_ratios]
            d["mask_ratios"] = windows
            if all(w is None for w in windows):
                d["mask_layers"] = None
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Architecture":
        """Build from a mapping of genes; missing genes take their defaults.

        Raises:
            GeneError: an unknown gene name, a value outside its domain or a broken rule.
        """
        if not isinstance(data, Mapping):
            raise GeneError(f"arch: expected a mapping of genes, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted((k for k in data if k not in names), key=str)
        if unknown:
            raise GeneError(f"arch: unknown gene {str(unknown[0])[:40]!r}; known genes: {', '.join(sorted(names))}")
        kwargs = dict(data)
        if "mask_ratios" in kwargs:
            ratios = kwargs["mask_ratios"]
            if not isinstance(ratios, (list, tuple)):
                raise GeneError(f"mask_ratios: expected a list of ratios, got {ratios!r}")
            kwargs["mask_ratios"] = tuple(ratios)
        try:
            return cls(**kwargs)
        except TypeError as exc:  # pragma: no cover - defensive (e.g. unhashable values)
            raise GeneError(f"arch: {exc}") from None

    @classmethod
    def from_json(cls, text: str) -> "Architecture":
        """Inverse of :meth:`to_json`.

        Raises:
            GeneError: the text is not JSON or its genes are invalid.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GeneError(f"arch: not valid JSON ({exc.msg} at position {exc.pos})") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> "Architecture":
        """A copy with some genes changed (validated)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """Short one-line summary, e.g. ``mait C64 L4 H4 p2 learned/patch masks=0,0.5,.. ``."""
        parts = [self.attention, f"C{self.embed_dim}", f"L{self.depth}", f"H{self.num_heads}",
                 f"mlp{self.mlp_ratio:g}", f"p{self.patch_size}", self.pos_encoding, self.stem]
        if self.compact:
            parts.append("compact")
        if self.attention == "mait":
            parts.append("masks=" + ",".join(f"{r:g}" for r in self.mask_ratios) + f"/{self.mask_layers}")
        if self.qna_window is not None:
            parts.append(f"k{self.qna_window}")
        if self.refiner_expansion is not None:
            parts.append(f"r{self.refiner_expansion}")
        return " ".join(parts)


def mait_window_for_ratio(ratio: float, grid: tuple[int, int]) -> int | None:
    """Side of the square window whose hidden fraction on ``grid`` is closest to ``ratio``.

    MaiT (arXiv 2207.03006) calls the fraction of key positions outside a head's window its mask
    ratio. ``ratio == 0`` means a global head and returns ``None``. Only odd windows (centred on the
    query patch) are considered; the hidden fraction of a window k on an R x C grid is taken as
    ``1 - k^2 / (R C)`` (the interior value; windows are clipped at the border).
    """
    if ratio <= 0:
        return None
    rows, cols = grid
    n = rows * cols
    best, best_err = 1, math.inf
    for k in range(1, 2 * max(rows, cols), 2):
        err = abs((1 - min(k * k, n) / n) - ratio)
        if err < best_err - 1e-12:
            best, best_err = k, err
    return best
