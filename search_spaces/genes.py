"""The architecture record: one frozen dataclass of genes that crosses every layer of vitnas.

The sampler produces an :class:`Architecture`, the builder consumes it, a trial stores it as an Optuna
user attribute (``arch``), the dashboard shows it and the export writes it as timm ``model_args``. It
round-trips through JSON unchanged (:meth:`Architecture.to_json` / :meth:`Architecture.from_json`).

Which gene applies to which attention mechanism is not written here: it comes from the mechanism
registry (:mod:`search_spaces.registry`), from which :func:`applicable_genes`, :func:`rules`,
:meth:`Architecture.validate`, :meth:`Architecture.canonical_key` and :meth:`Architecture.describe`
derive. The constants below are the registry as it stands once the built-in mechanisms are found
(code that must also see a mechanism registered later asks :mod:`search_spaces.registry`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from . import registry
from .mechanisms.mait import mait_window_for_ratio
from .registry import GeneError, get_mechanism

__all__ = [
    "ATTENTIONS",
    "QKV_ATTENTIONS",
    "ROPE_ATTENTIONS",
    "POS_ENCODINGS",
    "ROPE_ENCODINGS",
    "STEMS",
    "MASK_RATIO_CHOICES",
    "QNA_WINDOWS",
    "REFINER_EXPANSIONS",
    "GeneError",
    "MAX_GENE",
    "MAX_PARAMS",
    "MAX_MESSAGE",
    "Architecture",
    "clip_message",
    "estimate_params",
    "short_repr",
    "applicable_genes",
    "mait_window_for_ratio",
    "rules",
]


#: Every attention mechanism of the zoo, in the order of the ``attention`` domain (docs/design.md, "The
#: attention zoo").
ATTENTIONS: tuple[str, ...] = registry.names()
#: Mechanisms with Q, K and V projections: the Armour ``compact`` modifier applies to them.
QKV_ATTENTIONS: frozenset[str] = frozenset(s.name for s in registry.mechanisms() if s.has_qkv)
#: Mechanisms with per-token queries and keys: rotary position encodings apply to them.
ROPE_ATTENTIONS: frozenset[str] = QKV_ATTENTIONS

POS_ENCODINGS: tuple[str, ...] = ("learned", "sincos2d", "rope1d", "rope2d", "none")
ROPE_ENCODINGS: frozenset[str] = frozenset({"rope1d", "rope2d"})
STEMS: tuple[str, ...] = ("patch", "conv", "conv_bn")
#: Domains of the mechanisms' own genes (declared in their files of :mod:`search_spaces.attention`).
MASK_RATIO_CHOICES: tuple[float, ...] = registry.gene("mask_ratios").choices
QNA_WINDOWS: tuple[int, ...] = registry.gene("qna_window").choices
REFINER_EXPANSIONS: tuple[int, ...] = registry.gene("refiner_expansion").choices


#: Upper bound of each integer macro gene. Far above any published ViT (ViT-G/14: C 1664, 48 blocks, 16
#: heads; ViT-22B: C 6144 is the one exception) and above every domain vitnas ships, but low enough that
#: an untrusted ``config.json`` cannot ask for a model that does not fit in memory.
MAX_GENE: dict[str, int] = {"embed_dim": 4096, "depth": 64, "num_heads": 64, "patch_size": 64}
#: Largest estimated parameter count (plus position tables) of a model, checked from the genes before
#: anything is allocated: 2e9 float32 values are 8 GB (ViT-G/14, 1.8e9 parameters, still fits).
MAX_PARAMS: int = 2_000_000_000
#: Longest error message (one screen line); user values inside it are cut by :func:`short_repr`.
MAX_MESSAGE: int = 200


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to ``limit`` characters (``...`` marks the cut), for error messages that quote
    untrusted input; never fails (an int too long to print shows its bit length)."""
    try:
        text = repr(value)
    except ValueError:  # int with more digits than sys.get_int_max_str_digits()
        return f"<int of {value.bit_length()} bits>" if isinstance(value, int) else f"<{type(value).__name__}>"
    except Exception:  # pragma: no cover - hostile __repr__
        return f"<{type(value).__name__}>"
    text = " ".join(text.split()) if "\n" in text or "\r" in text else text
    return text if len(text) <= limit else text[: limit - 3] + "..."


def clip_message(message: str, limit: int = MAX_MESSAGE) -> str:
    """``message`` on one line and at most ``limit`` characters."""
    message = " ".join(str(message).split())
    return message if len(message) <= limit else message[: limit - 3] + "..."


def estimate_params(embed_dim: int, depth: int, mlp_ratio: float, patch_size: int, *, stem: str = "patch",
                    num_tokens: int = 0, in_chans: int = 3, num_classes: int = 0, attention: str = "mhsa") -> int:
    """An upper estimate of the parameters (and position tables) of a model with these genes, computed
    before anything is allocated: per block attention (4 C^2) and MLP (2 r C^2), the stem (``p^2
    in_chans C`` linear; ``9 in_chans C + 6 C^2 (+ p^2 C^2)`` conv; ``9 in_chans C + 13 C^2`` conv_bn),
    the head, and for ``num_tokens`` N the position tables (2 N C) and the token-tied mechanisms (Mixer:
    2 N D_S + D_S + N per block with D_S = max(C/2, 256), Linformer: at most 64 N per block)."""
    c, n = embed_dim, num_tokens
    block = 4 * c * c + int(2 * mlp_ratio * c * c) + 16 * c
    if attention == "mixer":
        hidden = max(c // 2, 256)
        block += 2 * n * hidden + hidden + n
    elif attention == "linformer":
        block += 64 * n
    if stem == "conv":
        stem_params = 9 * in_chans * c + 6 * c * c + (patch_size * patch_size * c * c if patch_size > 1 else 0)
    elif stem == "conv_bn":
        stem_params = 9 * in_chans * c + 13 * c * c
    else:
        stem_params = patch_size * patch_size * in_chans * c + c
    return depth * block + stem_params + 2 * n * c + c * num_classes + num_classes + 4 * c


def _facts(names: list[str], singular: str, plural: str) -> str:
    """``["a"]`` -> ``"a <singular>"``; ``["a", "b"]`` -> ``"a and b <plural>"``."""
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return f"{listed} {singular if len(names) == 1 else plural}"


def rules() -> tuple[tuple[str, str], ...]:
    """Human-readable rules as ``(gene, rule)`` pairs, one per line of ``vitnas space``, derived from the
    mechanisms registered now."""
    specs = registry.mechanisms()
    qkv = ", ".join(sorted(s.name for s in specs if s.has_qkv))
    out = [(g.name, g.rule.replace("{owners}", ", ".join(sorted(registry.owners(g.name))))) for g in registry.genes()]
    out += [
        ("pos_encoding", "rope1d/rope2d only where there are Q and K: " + qkv),
        ("head_dim", "embed_dim divisible by num_heads; rope1d needs an even head_dim, rope2d a multiple of 4"),
        ("embed_dim", "sincos2d needs embed_dim divisible by 4 (a sine and a cosine per axis)"),
        ("stem", "conv_bn needs a power-of-two patch_size (one stride-2 convolution per halving)"),
    ]
    no_cls = [s.name for s in specs if not s.class_token]
    if no_cls:
        out.append(("class token", _facts(no_cls, "has", "have") + " none: the model pools by global average; "
                    "all others use a class token"))
    fixed = [s.name for s in specs if s.fixed_tokens]
    if fixed:
        out.append(("token count", _facts(fixed, "is tied to the token count of the image size it was built for",
                                          "are tied to the token count of the image size they were built for")))
    out += [(f"{s.name} at N tokens", s.scaling) for s in specs if s.scaling]
    explicit = [s.name for s in specs if s.explicit_map]
    if explicit:
        out.append(("score map", _facts(explicit, "needs", "need") + " the explicit N x N score map: no fused "
                    "attention kernel, memory grows as N^2"))
    return tuple(out)


def applicable_genes(attention: str) -> frozenset[str]:
    """Names of the attention-specific genes that apply to ``attention`` (``compact`` and its own).

    Raises:
        GeneError: ``attention`` is not a registered mechanism.
    """
    return frozenset(g.name for g in get_mechanism(attention).all_genes)


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

    The attention-specific genes are declared by the mechanisms (:class:`~search_spaces.registry.GeneSpec`
    in their files); each is also a field here, so a mechanism with a brand-new gene adds a field (with
    its neutral value as the default, so that stored architectures still load) here and in
    :class:`~search_spaces.space.SearchSpace`.
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
        try:
            # Normalise JSON-ish inputs (lists, ints for floats) so equal genes compare and hash equal.
            for gene in registry.genes():
                object.__setattr__(self, gene.name, gene.normalise(getattr(self, gene.name)))
            ratio = self.mlp_ratio
            # An int too large for a float stays an int, which validate() then refuses in one line.
            if isinstance(ratio, (int, float)) and not isinstance(ratio, bool) and abs(ratio) < 1e300:
                object.__setattr__(self, "mlp_ratio", float(ratio))
            self.validate()
        except GeneError as exc:  # messages quote user values: keep them to one short line
            message = str(exc)
            if len(message) > MAX_MESSAGE or "\n" in message or "\r" in message:
                raise GeneError(clip_message(message)) from None
            raise

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check every gene against its domain and every rule of :func:`rules`; the attention-specific
        genes are checked by their :class:`~search_spaces.registry.GeneSpec`.

        Raises:
            GeneError: one line naming the gene and what is allowed.
        """
        for name, top in MAX_GENE.items():
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= top:
                raise GeneError(f"{name}: must be an integer in [1, {top}], got {short_repr(value)}")
        if not isinstance(self.mlp_ratio, float) or not (0 < self.mlp_ratio <= 16):
            raise GeneError(f"mlp_ratio: must be a number in (0, 16], got {short_repr(self.mlp_ratio)}")
        params = estimate_params(self.embed_dim, self.depth, self.mlp_ratio, self.patch_size,
                                 stem=self.stem if isinstance(self.stem, str) else "patch")
        if params > MAX_PARAMS:
            raise GeneError(
                f"embed_dim: {self.embed_dim} with depth {self.depth}, mlp_ratio {self.mlp_ratio:g}, patch_size "
                f"{self.patch_size} gives about {params:.2g} parameters, over the limit of {MAX_PARAMS:.2g}"
            )
        if not isinstance(self.attention, str) or len(self.attention) > 60:
            raise GeneError(f"attention: unknown value {short_repr(self.attention)}; "
                            f"allowed: {', '.join(registry.names())}")
        spec = get_mechanism(self.attention)  # raises on unknown attention
        if self.pos_encoding not in POS_ENCODINGS:
            raise GeneError(f"pos_encoding: unknown value {short_repr(self.pos_encoding)}; "
                            f"allowed: {', '.join(POS_ENCODINGS)}")
        if self.stem not in STEMS:
            raise GeneError(f"stem: unknown value {short_repr(self.stem)}; allowed: {', '.join(STEMS)}")
        for gene in registry.genes():
            gene.check_choices(self)
        if self.embed_dim % self.num_heads:
            raise GeneError(
                f"num_heads: embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}; "
                "choose num_heads among the divisors of embed_dim"
            )
        head_dim = self.embed_dim // self.num_heads
        # Attention-specific genes: checked where they apply, neutral everywhere else.
        applicable = {g.name for g in spec.all_genes}
        for gene in registry.genes():
            if gene.name in applicable:
                gene.check(self, spec.name)
            else:
                gene.check_absent(self)
        # Position encoding and stem rules.
        if self.pos_encoding in ROPE_ENCODINGS:
            if not spec.has_qkv:
                raise GeneError(
                    f"pos_encoding: {self.pos_encoding} needs queries and keys; {spec.name!r} has none "
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
        return get_mechanism(self.attention).class_token

    def check_image(self, img_size: int | tuple[int, int]) -> tuple[int, int]:
        """Token grid (rows, cols) for ``img_size`` pixels.

        Raises:
            GeneError: ``img_size`` is not divisible by ``patch_size``.
        """
        h, w = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        if h % self.patch_size or w % self.patch_size:
            raise GeneError(
                f"patch_size: img_size {short_repr(h, 20)}x{short_repr(w, 20)} is not divisible by patch_size {self.patch_size}; "
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
        """Like :meth:`key`, but equal for genes that build the same model at ``img_size``: a mechanism
        that ignores ``num_heads`` (FNet, Mixer) drops it, and the mechanism's own hook merges the rest
        (MaiT: mask ratios that map to the same window on the token grid, e.g. 0.9 and 0.95 on an 8x8
        grid, are the same mask; QnA: windows clamped to the same side, e.g. 5 and 7 on a 4x4 grid). A
        combination the builder refuses on this grid (a MaiT ratio out of reach) still gets a key. Used to
        never train one model twice.

        Raises:
            GeneError: ``img_size`` is not divisible by ``patch_size`` (where the hook needs the grid).
        """
        spec = get_mechanism(self.attention)
        d = self.to_dict()
        if not spec.uses_heads:
            d["num_heads"] = None
        spec.canonical(self, img_size, d)
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Architecture:
        """Build from a mapping of genes; missing genes take their defaults.

        Raises:
            GeneError: an unknown gene name, a value outside its domain or a broken rule.
        """
        if not isinstance(data, Mapping):
            raise GeneError(f"arch: expected a mapping of genes, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted((k for k in data if k not in names), key=str)
        if unknown:
            raise GeneError(clip_message(f"arch: unknown gene {short_repr(str(unknown[0]), 24)}; "
                                         f"known genes: {', '.join(sorted(names))}"))
        try:
            return cls(**data)
        except TypeError as exc:  # pragma: no cover - defensive (e.g. unhashable values)
            raise GeneError(clip_message(f"arch: {exc}")) from None

    @classmethod
    def from_json(cls, text: str) -> Architecture:
        """Inverse of :meth:`to_json`.

        Raises:
            GeneError: the text is not JSON or its genes are invalid.
        """
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GeneError(f"arch: not valid JSON ({exc.msg} at position {exc.pos})") from None
        return cls.from_dict(data)

    def replace(self, **changes: Any) -> Architecture:
        """A copy with some genes changed (validated)."""
        return dataclasses.replace(self, **changes)

    def describe(self) -> str:
        """Short one-line summary, e.g. ``mait C64 L4 H4 mlp4 p2 learned patch masks=0.9,0.9/paper``; each
        attention-specific gene shows as its :class:`~search_spaces.registry.GeneSpec` labels it."""
        parts = [self.attention, f"C{self.embed_dim}", f"L{self.depth}", f"H{self.num_heads}",
                 f"mlp{self.mlp_ratio:g}", f"p{self.patch_size}", self.pos_encoding, self.stem]
        labels = (gene.describe(self) for gene in get_mechanism(self.attention).all_genes)
        return " ".join(parts + [label for label in labels if label])

