"""The search space: the domain of every gene and how an Optuna trial samples an architecture.

Sampling is define-by-run: conditional genes are asked for only where they apply to the sampled
attention (``compact`` for mechanisms with Q, K, V; ``mask_ratio_<i>`` per head for MaiT; ``qna_window``
for QnA; ``refiner_expansion`` for Refiner), so every sampled architecture obeys the rules of
:mod:`search_spaces.genes`. Which genes those are, their universes and their Optuna parameters come
from the mechanism registry (:mod:`search_spaces.registry`). The position encoding is asked as
``pos_encoding`` where RoPE applies and as ``pos_encoding_no_rope`` (the same domain without RoPE) where
it does not, because an Optuna parameter keeps one distribution for the whole study. For the same reason
a gene that cannot take every value of its domain on some token grid (a MaiT mask ratio no window of at
least 3x3 hides on a 4x4 grid) is asked, on that grid only, under a per-grid name with the values that
remain (``mask_ratio_4x4_<i>``); this needs the image sizes (the proxy's and a deployment target's),
which :meth:`SearchSpace.for_image` records.

A space can be narrowed (or widened within each gene's universe) from a YAML or TOML file whose
top-level keys are gene names and whose values are lists::

    attention: [mhsa, mait, qna]
    embed_dim: [32, 64]
    qna_window: [3, 5]
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from . import registry
from .genes import (
    MAX_GENE,
    MAX_MESSAGE,
    MAX_PARAMS,
    POS_ENCODINGS,
    ROPE_ENCODINGS,
    STEMS,
    Architecture,
    clip_message,
    estimate_params,
    short_repr,
)
from .registry import get_mechanism

if TYPE_CHECKING:  # pragma: no cover
    import optuna

__all__ = ["SearchSpace", "SpaceError"]


class SpaceError(ValueError):
    """A search-space domain that is malformed, outside a gene's universe or internally inconsistent."""


#: Largest config file read by :meth:`SearchSpace.from_file` (checked before reading it all): a space is a
#: few lines; a megabyte is thousands of times more than any real one.
MAX_CONFIG_BYTES = 1 << 20


class _Refused(Exception):
    """A config file construct vitnas refuses (YAML aliases, duplicate keys)."""


_loader_class: type | None = None


def _strict_yaml_loader() -> type:
    """A ``yaml.SafeLoader`` that refuses anchors and aliases (an alias bomb of a few hundred bytes
    expands to gigabytes) and duplicate mapping keys (the last one would silently win). Built on first
    use so that importing vitnas does not import PyYAML."""
    global _loader_class
    if _loader_class is None:
        import yaml

        class StrictLoader(yaml.SafeLoader):
            def compose_node(self, parent, index):  # type: ignore[no-untyped-def]
                event = self.peek_event()
                if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                    raise _Refused(f"YAML anchors and aliases (& and *) are not allowed "
                                   f"(line {event.start_mark.line + 1})")
                return super().compose_node(parent, index)

            def construct_mapping(self, node, deep=False):  # type: ignore[no-untyped-def]
                if isinstance(node, yaml.MappingNode):
                    seen: set[Any] = set()
                    for key_node, _ in node.value:
                        key = self.construct_object(key_node, deep=True)
                        try:
                            duplicate = key in seen
                            seen.add(key)
                        except TypeError:  # unhashable key: SafeLoader refuses it itself
                            continue
                        if duplicate:
                            raise _Refused(f"duplicate key {short_repr(key, 40)} "
                                           f"(line {key_node.start_mark.line + 1})")
                return super().construct_mapping(node, deep=deep)

        _loader_class = StrictLoader
    return _loader_class


#: The macro genes, asked for in this order (after ``attention``) by :meth:`SearchSpace.suggest`.
_MACRO_GENES = ("embed_dim", "depth", "num_heads", "mlp_ratio", "patch_size", "stem")


def _categorical_universe() -> dict[str, tuple[Any, ...]]:
    """Every value a categorical gene may take: the registered mechanisms and their genes' choices."""
    universe: dict[str, tuple[Any, ...]] = {"attention": registry.names(), "pos_encoding": POS_ENCODINGS,
                                            "stem": STEMS}
    universe.update((g.name, g.choices) for g in registry.genes())
    return universe


@dataclass(frozen=True)
class SearchSpace:
    """Domains of the genes (tuples of allowed values). Defaults suit the proxy task on small images.

    Construction checks every domain; :class:`SpaceError` (a ``ValueError``) names the gene and what is
    allowed. Every combination of ``embed_dim`` x ``num_heads`` must be valid for every position
    encoding in the domain (so sampling never produces an invalid architecture).

    ``attention`` defaults to every registered mechanism. Each attention-specific gene of the registry
    (:class:`~search_spaces.registry.GeneSpec`) is a field named after it, whose default is the gene's
    choices: a mechanism with a brand-new gene adds its field here (and in
    :class:`~search_spaces.genes.Architecture`).
    """

    attention: tuple[str, ...] = field(default_factory=registry.names)
    embed_dim: tuple[int, ...] = (32, 48, 64, 96)
    depth: tuple[int, ...] = (2, 3, 4, 6)
    num_heads: tuple[int, ...] = (2, 4)
    mlp_ratio: tuple[float, ...] = (2.0, 4.0)
    patch_size: tuple[int, ...] = (2, 4)
    pos_encoding: tuple[str, ...] = POS_ENCODINGS
    stem: tuple[str, ...] = STEMS
    compact: tuple[bool, ...] = registry.gene("compact").choices
    mask_ratios: tuple[float, ...] = registry.gene("mask_ratios").choices
    mask_layers: tuple[str, ...] = registry.gene("mask_layers").choices
    qna_window: tuple[int, ...] = registry.gene("qna_window").choices
    refiner_expansion: tuple[int, ...] = registry.gene("refiner_expansion").choices
    #: The image sides recorded by :meth:`for_image` (the proxy's, then a deployment target's; not a domain,
    #: not a field): with them, genes are sampled per token grid where a mechanism's ``grid_choices`` drops
    #: values on one of those grids (see the module docstring).
    _img_sizes: ClassVar[tuple[int, ...]] = ()

    def __post_init__(self) -> None:
        categorical = _categorical_universe()
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
                raise SpaceError(f"{f.name}: expected a list of values, got {short_repr(value)}")
            if not value:
                raise SpaceError(f"{f.name}: the domain is empty; give at least one value")
            if f.name in categorical:
                universe = categorical[f.name]
                for v in value:
                    if isinstance(v, bool) != isinstance(universe[0], bool) or v not in universe:
                        allowed = ", ".join(json.dumps(u) for u in universe)
                        raise SpaceError(clip_message(f"{f.name}: {short_repr(v)} is not allowed; allowed: {allowed}"))
                if all(isinstance(u, float) for u in universe):  # e.g. mask ratios given as 0 or 1
                    value = tuple(float(v) for v in value)
            elif f.name in MAX_GENE:
                top = MAX_GENE[f.name]
                for v in value:
                    if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= top:
                        raise SpaceError(f"{f.name}: {short_repr(v)} is not allowed; values are integers in [1, {top}]")
            else:  # mlp_ratio
                for v in value:
                    # The range test alone refuses nan and inf, and never converts a huge int to float.
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 16:
                        raise SpaceError(f"mlp_ratio: {short_repr(v)} is not allowed; values are numbers in (0, 16]")
                value = tuple(float(v) for v in value)
            # Drop duplicates, keep order (after the type checks, so True and 1 never merge).
            object.__setattr__(self, f.name, tuple(dict.fromkeys(value)))
        self._check_combinations()

    def _check_combinations(self) -> None:
        for c in self.embed_dim:
            for h in self.num_heads:
                if c % h:
                    raise SpaceError(
                        f"num_heads: {h} does not divide embed_dim {c}; every num_heads must divide every embed_dim"
                    )
                d = c // h
                if "rope1d" in self.pos_encoding and d % 2:
                    raise SpaceError(f"pos_encoding: rope1d needs an even head_dim, but embed_dim {c} / num_heads {h} = {d}")
                if "rope2d" in self.pos_encoding and d % 4:
                    raise SpaceError(f"pos_encoding: rope2d needs head_dim divisible by 4, "
                                     f"but embed_dim {c} / num_heads {h} = {d}")
            if "sincos2d" in self.pos_encoding and c % 4:
                raise SpaceError(f"pos_encoding: sincos2d needs embed_dim divisible by 4, got {c}")
        if "conv_bn" in self.stem:
            for p in self.patch_size:
                if p & (p - 1):
                    raise SpaceError(f"stem: conv_bn needs power-of-two patch sizes, got patch_size {p}")
        rope_attentions = {a for a in self.attention if get_mechanism(a).has_qkv}
        if not rope_attentions and not (set(self.pos_encoding) - set(ROPE_ENCODINGS)):
            raise SpaceError("pos_encoding: only RoPE allowed, but no attention in the domain has queries and keys")
        if not set(self.pos_encoding) - set(ROPE_ENCODINGS) and set(self.attention) - rope_attentions:
            bad = sorted(set(self.attention) - rope_attentions)
            raise SpaceError(f"pos_encoding: only RoPE allowed, which {', '.join(bad)} cannot use; add learned, sincos2d or none")
        c, depth, ratio = max(self.embed_dim), max(self.depth), max(self.mlp_ratio)
        params = max(estimate_params(c, depth, ratio, p, stem=s) for p in self.patch_size for s in self.stem)
        if params > MAX_PARAMS:
            raise SpaceError(f"embed_dim: {c} with depth {depth}, mlp_ratio {ratio:g} gives models of about "
                             f"{params:.2g} parameters, over the limit of {MAX_PARAMS:.2g}")

    # ------------------------------------------------------------------ construction from files
    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> SearchSpace:
        """Domains from a mapping of gene name -> list of values; missing genes keep their defaults.

        Raises:
            SpaceError: not a mapping, an unknown gene, or a value outside the gene's universe.
        """
        if not isinstance(data, Mapping):
            raise SpaceError(f"config: expected a mapping of gene -> list of values, got {type(data).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in data:
            if key not in names:
                raise SpaceError(clip_message(f"config: unknown gene {short_repr(str(key), 24)}; "
                                              f"known genes: {', '.join(names)}"))
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})

    @classmethod
    def from_file(cls, path: str | Path) -> SearchSpace:
        """Domains from a YAML (``.yaml``/``.yml``) or TOML (``.toml``) file.

        Untrusted files are safe to give: a file over :data:`MAX_CONFIG_BYTES` is refused before it is
        read, YAML anchors/aliases and duplicate keys (YAML and TOML) are refused, and every error is
        one line of at most 200 characters.

        Raises:
            SpaceError: the file is missing, unreadable, too large, not YAML/TOML, uses YAML aliases or
                duplicate keys, or holds invalid domains.
        """
        path = Path(path)
        shown = short_repr(str(path), 60)
        suffix = path.suffix.lower()
        if suffix not in (".toml", ".yaml", ".yml"):
            raise SpaceError(f"config: {shown} must end in .yaml, .yml or .toml")
        try:
            if path.stat().st_size > MAX_CONFIG_BYTES:
                raise SpaceError(f"config: {shown} is larger than {MAX_CONFIG_BYTES} bytes; a search space is a few lines")
            with path.open("rb") as fh:
                raw = fh.read(MAX_CONFIG_BYTES + 1)  # bounded even if the file grows or is not a regular file
            if len(raw) > MAX_CONFIG_BYTES:
                raise SpaceError(f"config: {shown} is larger than {MAX_CONFIG_BYTES} bytes; a search space is a few lines")
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpaceError(clip_message(f"config: cannot read {shown} ({exc.__class__.__name__}: {exc})")) from None
        try:
            if suffix == ".toml":
                data = tomllib.loads(text)
            else:
                import yaml

                data = yaml.load(text, Loader=_strict_yaml_loader())  # noqa: S506 - a SafeLoader subclass
        except _Refused as exc:
            raise SpaceError(clip_message(f"config: {shown} {exc}")) from None
        except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError, recursion in hostile YAML...
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else exc.__class__.__name__
            raise SpaceError(clip_message(f"config: {shown} is not valid {suffix[1:].upper()}: {first}")) from None
        if data is None:
            data = {}
        try:
            return cls.from_mapping(data)
        except SpaceError as exc:
            message = str(exc)
            if len(message) > MAX_MESSAGE or "\n" in message:
                raise SpaceError(clip_message(message)) from None
            raise

    def to_dict(self) -> dict[str, list[Any]]:
        """JSON-able form (lists)."""
        return {f.name: list(getattr(self, f.name)) for f in dataclasses.fields(self)}

    # ------------------------------------------------------------------ image-size restriction
    def for_image(self, img_size: int) -> SearchSpace:
        """The space restricted to patch sizes that divide ``img_size``, sampling per token grid: on a grid
        where a mechanism's gene cannot take every value of its domain (MaiT's mask ratios on 4x4 and 7x7
        grids), :meth:`suggest` asks it under ``<param>_<R>x<C>`` with the values that remain there.

        Raises:
            SpaceError: no patch size in the domain divides ``img_size``.
        """
        sizes = tuple(p for p in self.patch_size if img_size % p == 0)
        if not sizes:
            raise SpaceError(
                f"patch_size: none of {list(self.patch_size)} divides the image size {img_size}; "
                "choose patch sizes that divide it"
            )
        space = dataclasses.replace(self, patch_size=sizes)
        object.__setattr__(space, "_img_sizes", tuple(dict.fromkeys(self._img_sizes + (img_size,))))
        return space

    def _grid_gene(self, attention: str, gene: registry.GeneSpec, patch_size: int
                   ) -> tuple[registry.GeneSpec, tuple[Any, ...], str]:
        """The gene as asked at ``patch_size``, its domain there and the grids that restrict it as text.

        The domain keeps the values every recorded image size's grid allows (the proxy's and the
        deployment's: a model is built at both); where that drops values, the gene is renamed after the
        grids that drop them (``mask_ratio_4x4``), so each Optuna parameter keeps one set of choices."""
        domain = tuple(getattr(self, gene.name))
        allowed, grids = domain, []
        for img in self._img_sizes:
            grid = (img // patch_size, img // patch_size)
            kept = tuple(get_mechanism(attention).grid_choices(gene.name, allowed, grid))
            if kept != allowed:
                grids.append(f"{grid[0]}x{grid[1]}")
                allowed = kept
        if not grids or not allowed:  # nothing dropped, or nothing left (the builder then refuses, with its reason)
            return gene, domain, ""
        suffix = "_".join(grids)
        return dataclasses.replace(gene, param=f"{gene.param_name}_{suffix}"), allowed, " and ".join(grids)

    # ------------------------------------------------------------------ sampling
    def suggest(self, trial: optuna.trial.BaseTrial) -> Architecture:
        """Sample an architecture through ``trial`` (define-by-run; conditional genes where they apply).

        Asks, in this order: ``attention``, the macro genes (``embed_dim``, ``depth``, ``num_heads``,
        ``mlp_ratio``, ``patch_size``, ``stem``), ``pos_encoding`` (or ``pos_encoding_no_rope``), then the
        genes the attention takes (``compact`` first, then its own, e.g. ``mask_ratio_<i>`` per head and
        ``mask_layers`` for MaiT; ``mask_ratio_<R>x<C>_<i>`` on a grid where some ratios are out of reach,
        once :meth:`for_image` set the image size). ``trial`` needs only ``suggest_categorical(name, choices)``.
        """
        attention = trial.suggest_categorical("attention", list(self.attention))
        genes: dict[str, Any] = {"attention": attention}
        for name in _MACRO_GENES:
            genes[name] = trial.suggest_categorical(name, list(getattr(self, name)))
        spec = get_mechanism(attention)
        genes["pos_encoding"] = trial.suggest_categorical(*self._pos_param(attention))
        for gene in spec.all_genes:
            asked, domain, _ = self._grid_gene(attention, gene, genes["patch_size"])
            genes[gene.name] = asked.suggest(trial, domain, genes["num_heads"])
        return Architecture(**genes)

    def _pos_param(self, attention: str) -> tuple[str, list[str]]:
        if get_mechanism(attention).has_qkv:
            return "pos_encoding", list(self.pos_encoding)
        return "pos_encoding_no_rope", [p for p in self.pos_encoding if p not in ROPE_ENCODINGS]

    def param_choices(self) -> dict[str, list[Any]]:
        """Every Optuna parameter :meth:`suggest` may ask for, with its choices in the order it asks
        them (per-head genes: one parameter per head up to the largest ``num_heads``). The categorical
        distributions of a study over this space (e.g. to write trials with ``study.add_trials``)."""
        choices = {name: list(getattr(self, name)) for name in ("attention",) + _MACRO_GENES}
        choices["pos_encoding"] = list(self.pos_encoding)
        choices["pos_encoding_no_rope"] = [p for p in self.pos_encoding if p not in ROPE_ENCODINGS]
        for gene in registry.genes():
            choices.update(gene.param_choices(getattr(self, gene.name), max(self.num_heads)))
        for attention in self.attention:  # per-grid parameters (only with an image size)
            for gene in get_mechanism(attention).all_genes:
                for p in self.patch_size:
                    asked, domain, _ = self._grid_gene(attention, gene, p)
                    choices.update(asked.param_choices(domain, max(self.num_heads)))
        return choices

    def to_params(self, arch: Architecture) -> dict[str, Any]:
        """The Optuna parameters :meth:`suggest` would ask for to produce ``arch`` (for enqueueing).

        Raises:
            SpaceError: a gene of ``arch`` lies outside this space's domain.
        """
        if not self.contains(arch):
            raise SpaceError(f"arch: {arch.describe()} lies outside the search space ({self.why_outside(arch)})")
        params: dict[str, Any] = {name: getattr(arch, name) for name in ("attention",) + _MACRO_GENES}
        params[self._pos_param(arch.attention)[0]] = arch.pos_encoding
        for gene in get_mechanism(arch.attention).all_genes:
            asked, _, _ = self._grid_gene(arch.attention, gene, arch.patch_size)
            params.update(asked.params(getattr(arch, gene.name)))
        return params

    def why_outside(self, arch: Architecture) -> str:
        """Empty string when ``arch`` is inside the space, else the first gene that is not.

        Raises:
            GeneError: ``arch.attention`` is not a registered mechanism.
        """
        checks: list[tuple[str, Any]] = [
            ("attention", arch.attention), ("embed_dim", arch.embed_dim), ("depth", arch.depth),
            ("num_heads", arch.num_heads), ("mlp_ratio", arch.mlp_ratio), ("patch_size", arch.patch_size),
            ("pos_encoding", arch.pos_encoding), ("stem", arch.stem),
        ]
        for gene in get_mechanism(arch.attention).all_genes:
            checks += [(gene.name, v) for v in gene.values(getattr(arch, gene.name))]
        for name, value in checks:
            if value not in getattr(self, name):
                return f"{name}={value!r} not in {list(getattr(self, name))}"
        for gene in get_mechanism(arch.attention).all_genes:  # values the token grids of for_image drop
            for img in self._img_sizes:
                grid = (img // arch.patch_size,) * 2
                allowed = get_mechanism(arch.attention).grid_choices(gene.name, getattr(self, gene.name), grid)
                bad = [v for v in gene.values(getattr(arch, gene.name)) if v not in allowed]
                if bad:
                    return f"{gene.name}={bad[0]!r} cannot be built on the {grid[0]}x{grid[1]} token grid"
        return ""

    def contains(self, arch: Architecture) -> bool:
        """Whether every gene of ``arch`` lies in this space's domain."""
        return not self.why_outside(arch)

    def size(self) -> int:
        """Number of distinct architectures in the space."""
        macro = len(self.embed_dim) * len(self.depth) * len(self.mlp_ratio) * len(self.patch_size) * len(self.stem)
        no_rope = len([p for p in self.pos_encoding if p not in ROPE_ENCODINGS])
        total = 0
        for h in self.num_heads:
            for a in self.attention:
                spec = get_mechanism(a)
                n = len(self.pos_encoding) if spec.has_qkv else no_rope
                for gene in spec.all_genes:
                    n *= gene.count(getattr(self, gene.name), h)
                total += n
        return macro * total
