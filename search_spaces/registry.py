"""The registry of attention mechanisms: what each one is, which genes it takes, how it is built.

Modelled on timm's attention-layer lookup (``timm.layers.create_attn.get_attn``: a name to a module class).
Every mechanism is two files of the same name: its spec in :mod:`search_spaces.mechanisms` (a
module-level ``MECHANISM = MechanismSpec(...)``, pure Python) and its layer, an ``nn.Module``, in
:mod:`search_spaces.attention`, which the spec names as ``"package.module:attribute"`` strings and which is
imported the first time a layer is built (:meth:`MechanismSpec.build_layer`). :func:`mechanisms` imports
every file of :mod:`search_spaces.mechanisms` (``pkgutil.iter_modules``) the first time it is asked and
collects them. Adding a mechanism is those two files plus its tests (docs/design.md, "The attention zoo");
everything that depends on the set of mechanisms derives from here: the gene rules and validation
(:mod:`search_spaces.genes`), sampling, enqueueing and the size of the search space
(:mod:`search_spaces.space`), ``vitnas space``, the model builder
(:func:`search_spaces.attention.build_attention`) and the demo study.

A mechanism's own genes are :class:`GeneSpec` objects: name, domain (the universe of values), neutral
value (what the gene holds where it does not apply), the rule text ``vitnas space`` prints and how it
shows in :meth:`~search_spaces.genes.Architecture.describe`. Armour's ``compact`` (:data:`COMPACT`) is a
shared gene: it applies to every mechanism with Q, K and V projections (``MechanismSpec.has_qkv``).

This module, and every file it discovers, imports neither torch nor Optuna: validating genes, sampling
them and printing the space need no deep-learning stack (the split of Hugging Face transformers'
``configuration_*.py`` and ``modeling_*.py``).
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    import optuna

    from .attention.common import AttentionModule, TokenLayout

#: A design as the registry reads it: a :class:`search_spaces.genes.Architecture`. The gene record sits above
#: the registry (it is validated by the mechanisms' specs), so the registry names it by this alias, not by an
#: import: the imports of search_spaces run one way (docs/design.md, "Layers").
Design = Any

__all__ = [
    "GeneError", "GeneSpec", "MechanismSpec", "COMPACT", "mechanisms", "get_mechanism", "names", "genes",
    "gene", "owners", "register", "unregister", "format_domain", "or_list",
]

#: The package whose files are searched for ``MECHANISM`` declarations.
_PACKAGE = "search_spaces.mechanisms"


class GeneError(ValueError):
    """A gene value outside its domain or a combination that breaks a rule.

    The message names the gene and what is allowed, on one line.
    """


def _same(value: Any, other: Any) -> bool:
    """Equality that keeps booleans apart from numbers (``0 == False`` in Python, not here)."""
    return isinstance(value, bool) == isinstance(other, bool) and value == other


def _text(value: Any) -> str:
    """A value as rules and messages show it: ``0.5``, ``0`` (not ``0.0``), ``true``, ``paper``."""
    if isinstance(value, bool):
        return str(value).lower()
    return f"{value:g}" if isinstance(value, float) else str(value)


def format_domain(values: tuple[Any, ...]) -> str:
    """``(0.0, 0.5)`` -> ``"{0, 0.5}"``: a domain as error messages and rules show it."""
    return "{" + ", ".join(_text(v) for v in values) + "}"


def or_list(values: tuple[Any, ...]) -> str:
    """``(3, 5, 7)`` -> ``"3, 5 or 7"``."""
    texts = [_text(v) for v in values]
    return texts[0] if len(texts) == 1 else ", ".join(texts[:-1]) + " or " + texts[-1]


@dataclass(frozen=True)
class GeneSpec:
    """One attention-specific gene: its domain, neutral value, rule and Optuna parameter(s).

    The gene is a field of the same name in :class:`~search_spaces.genes.Architecture` (its value) and
    in :class:`~search_spaces.space.SearchSpace` (its domain). A brand-new gene therefore also needs a
    field in both dataclasses; a gene shared with an existing mechanism does not.

    Attributes:
        name: the field name in ``Architecture`` and ``SearchSpace`` (e.g. ``"qna_window"``).
        choices: every value the gene may take (the universe a search-space file may pick from, and the
            default domain), in the order Optuna's categorical distribution lists them. Never reorder
            or remove choices: stored studies hold that distribution.
        neutral: the value the gene keeps where it does not apply (``None``, ``()``, ``False``, ...).
        rule: the line ``vitnas space`` prints for the gene; ``{owners}`` is replaced by the mechanisms
            that take it (comma-separated, sorted).
        per_head: one value per attention head (a tuple of ``num_heads`` values, each from ``choices``);
            Optuna asks one parameter per head, ``<param>_<i>``.
        item: what one value is called in error messages (``"ratio"``, ``"window"``, ...).
        param: the Optuna parameter name (for ``per_head``, its prefix); defaults to ``name``.
        invalid: template of the message for a value outside ``choices`` where the gene applies, with
            the fields ``gene``, ``owner``, ``item``, ``article``, ``domain``, ``allowed`` and ``value``.
        label: ``label(arch)`` -> the gene's part of ``Architecture.describe()``, or ``None`` for none;
            by default ``name=value`` whenever the value is not neutral.
    """

    name: str
    choices: tuple[Any, ...]
    neutral: Any
    rule: str
    per_head: bool = False
    item: str = "value"
    param: str | None = None
    invalid: str = "{gene}: {owner} needs {article} {item} in {domain}, got {value!r}"
    label: Callable[[Design], str | None] | None = None

    @property
    def param_name(self) -> str:
        """The Optuna parameter name (the prefix of ``<param>_<i>`` for a per-head gene)."""
        return self.param or self.name

    @property
    def required(self) -> bool:
        """A scalar gene whose neutral value is not a choice: it must be set where it applies."""
        return not self.per_head and not self.allows(self.neutral)

    def allows(self, value: Any) -> bool:
        """Whether one value lies in ``choices`` (booleans and numbers kept apart)."""
        return any(_same(value, c) for c in self.choices)

    def normalise(self, value: Any) -> Any:
        """Canonical form of a value (a per-head gene of float choices becomes a tuple of floats).

        Raises:
            GeneError: a per-head gene given something other than a list of numbers.
        """
        if not self.per_head:
            return value
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise GeneError(f"{self.name}: expected a list of {self.item}s, got {value!r}")
        if not all(isinstance(c, float) for c in self.choices):
            return tuple(value)
        try:
            return tuple(float(v) for v in value)
        except (TypeError, ValueError, OverflowError):
            raise GeneError(f"{self.name}: expected a list of {self.item}s, got {value!r}") from None

    # ------------------------------------------------------------------ validation
    def check(self, arch: Design, owner: str) -> None:
        """Check the gene of ``arch`` where it applies (``owner`` is the attention).

        Raises:
            GeneError: a per-head gene with a length other than ``num_heads``, or a value not in ``choices``.
        """
        value = getattr(arch, self.name)
        if not self.per_head:
            if not self.allows(value):
                self._refuse(value, owner)
            return
        if len(value) != arch.num_heads:
            raise GeneError(f"{self.name}: {owner} needs one {self.item} per head ({arch.num_heads}), got {len(value)}")
        bad = [v for v in value if not self.allows(v)]
        if bad:
            raise GeneError(f"{self.name}: {bad[0]!r} not allowed; each {self.item} in {format_domain(self.choices)}")

    def _refuse(self, value: Any, owner: str) -> None:
        raise GeneError(self.invalid.format(
            gene=self.name, owner=owner, item=self.item, article="an" if self.item[:1] in "aeiou" else "a",
            domain=format_domain(self.choices), allowed=", ".join(_text(c) for c in self.choices), value=value))

    def check_choices(self, arch: Design) -> None:
        """Whatever the attention, a scalar gene whose neutral value is one of its choices (``compact``,
        ``mask_layers``) holds one of its choices.

        Raises:
            GeneError: a value outside the choices.
        """
        value = getattr(arch, self.name)
        if not (self.per_head or self.required or self.allows(value)):
            self._refuse(value, ", ".join(sorted(owners(self.name))))

    def check_absent(self, arch: Design) -> None:
        """Check that the gene keeps its neutral value where it does not apply.

        Raises:
            GeneError: the gene is set on an attention that does not take it.
        """
        if _same(getattr(arch, self.name), self.neutral):
            return
        hint = {type(None): "; leave it null", tuple: "; leave it empty"}.get(type(self.neutral), "")
        raise GeneError(f"{self.name}: applies only to {', '.join(sorted(owners(self.name)))}, "
                        f"not to {arch.attention!r}{hint}")

    # ------------------------------------------------------------------ the search space
    def suggest(self, trial: optuna.trial.BaseTrial, domain: tuple[Any, ...], num_heads: int) -> Any:
        """Ask ``trial`` for the gene's value(s) from ``domain``."""
        if self.per_head:
            return tuple(trial.suggest_categorical(f"{self.param_name}_{i}", list(domain)) for i in range(num_heads))
        return trial.suggest_categorical(self.param_name, list(domain))

    def params(self, value: Any) -> dict[str, Any]:
        """The Optuna parameters that :meth:`suggest` turns into ``value``."""
        if self.per_head:
            return {f"{self.param_name}_{i}": v for i, v in enumerate(value)}
        return {self.param_name: value}

    def param_choices(self, domain: tuple[Any, ...], max_heads: int) -> dict[str, list[Any]]:
        """Every Optuna parameter of the gene (``max_heads`` of them when per head) with its choices."""
        if self.per_head:
            return {f"{self.param_name}_{i}": list(domain) for i in range(max_heads)}
        return {self.param_name: list(domain)}

    def values(self, value: Any) -> tuple[Any, ...]:
        """The single values to look up in a domain (each head's for a per-head gene)."""
        return tuple(value) if self.per_head else (value,)

    def count(self, domain: tuple[Any, ...], num_heads: int) -> int:
        """Number of distinct values the gene takes from ``domain`` at ``num_heads`` heads."""
        return len(domain) ** num_heads if self.per_head else len(domain)

    def describe(self, arch: Design) -> str | None:
        """The gene's part of ``Architecture.describe()`` (``None``: nothing to show)."""
        if self.label is not None:
            return self.label(arch)
        value = getattr(arch, self.name)
        return None if _same(value, self.neutral) else f"{self.name}={value}"


#: Armour's compact Q, K, V (arXiv 2108.01778): applies to every mechanism with ``has_qkv``.
COMPACT = GeneSpec(
    name="compact", choices=(False, True), neutral=False,
    rule="only for attention with Q, K, V projections: {owners}",
    invalid="{gene}: must be true or false, got {value!r}",
    label=lambda arch: "compact" if arch.compact else None,
)


def _no_canonical(arch: Design, img_size: Any, genes: dict[str, Any]) -> None:
    """Default canonicalisation hook: nothing beyond ``uses_heads``."""


def _all_choices(gene: str, domain: tuple[Any, ...], grid: tuple[int, int]) -> tuple[Any, ...]:
    """Default ``grid_choices`` hook: every value of the domain builds on every grid."""
    return domain


@dataclass(frozen=True)
class MechanismSpec:
    """What vitnas knows about one attention mechanism (docs/design.md, "The attention zoo").

    Attributes:
        name: the value of the ``attention`` gene (e.g. ``"mhsa"``).
        order: position in the ``attention`` domain; the built-in mechanisms take 0 to 8. Stored Optuna
            studies hold the categorical distribution in this order, so a new mechanism takes an order
            after every existing one and no order ever changes.
        module: the :class:`~search_spaces.attention.common.AttentionModule` subclass it builds, or where
            to import it from, ``"package.module:Class"`` (what the built-in specs give, so that the
            registry imports torch only when a layer is built; see :meth:`module_class`).
        build: ``build(arch, layer_index, layout)`` -> the module for layer ``layer_index`` (0-based) of
            ``arch`` on a model whose tokens are laid out as ``layout``; a callable or
            ``"package.module:function"`` (see :meth:`build_layer`).
        summary: one line with the paper (title or authors, arXiv id) the mechanism implements.
        has_qkv: per-token Q, K, V projections, so Armour's ``compact`` and rotary encodings apply.
        class_token: whether the model prepends a class token (``False``: it pools by global average).
        fixed_tokens: weights tied to the token count N the layer was built for.
        explicit_map: needs the explicit N x N score map (no fused attention kernel).
        uses_heads: ``num_heads`` changes the layer (``False``: genes differing only in it are one model).
        genes: its own genes, in the order Optuna is asked for them (after ``compact``).
        canonical: ``canonical(arch, img_size, genes)`` edits the JSON-able dict of genes in place so that
            genes building the same model at ``img_size`` give equal dicts (see
            :meth:`~search_spaces.genes.Architecture.canonical_key`); may raise ``GeneError`` only for an
            ``img_size`` the patch size does not divide.
        grid_choices: ``grid_choices(gene, domain, grid)`` -> the values of ``domain`` the gene can take
            on a (rows, cols) patch grid (default: all). Where it drops values, the search space asks the
            gene under a per-grid Optuna name (:meth:`~search_spaces.space.SearchSpace.suggest`).
        scaling: how the mechanism's paper constants follow the token count N, with their source (one
            line of ``vitnas space``; empty: none).
    """

    name: str
    order: int
    module: type | str
    build: Callable[[Design, int, TokenLayout], AttentionModule] | str
    summary: str
    has_qkv: bool = True
    class_token: bool = True
    fixed_tokens: bool = False
    explicit_map: bool = False
    uses_heads: bool = True
    genes: tuple[GeneSpec, ...] = ()
    canonical: Callable[[Design, Any, dict[str, Any]], None] = _no_canonical
    grid_choices: Callable[[str, tuple[Any, ...], tuple[int, int]], tuple[Any, ...]] = _all_choices
    scaling: str = ""

    @property
    def all_genes(self) -> tuple[GeneSpec, ...]:
        """Every attention-specific gene that applies: ``compact`` (when ``has_qkv``), then :attr:`genes`."""
        return ((COMPACT,) if self.has_qkv else ()) + self.genes

    def module_class(self) -> type:
        """The layer's class (:attr:`module`, imported on first use when given as a string).

        Raises:
            ImportError: the module named by :attr:`module` cannot be imported (or lacks the attribute).
        """
        return _resolve(self.module, self.name, "module")

    def build_layer(self, arch: Design, layer_index: int, layout: TokenLayout) -> AttentionModule:
        """The layer for layer ``layer_index`` (0-based) of ``arch`` on a model with ``layout`` (:attr:`build`,
        imported on first use when given as a string).

        Raises:
            GeneError: genes the layer cannot be built from (e.g. a MaiT ratio out of reach on the grid).
        """
        return _resolve(self.build, self.name, "build")(arch, layer_index, layout)

    def macs(self, arch: Design, layout: TokenLayout, layer_index: int = 0) -> int:
        """Analytic multiply-adds per image of layer ``layer_index``: the built module's ``macs(layout)``."""
        return self.build_layer(arch, layer_index, layout).macs(layout)


def _resolve(ref: Any, mechanism: str, what: str) -> Any:
    """``ref`` itself, or the object a ``"package.module:attribute"`` string names (imported, then cached)."""
    return _import_ref(ref, mechanism, what) if isinstance(ref, str) else ref


@functools.cache
def _import_ref(ref: str, mechanism: str, what: str) -> Any:
    module_name, _, attribute = ref.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except AttributeError:
        raise ImportError(f"attention {mechanism!r}: {what} {ref!r} names no attribute {attribute!r}") from None


_REGISTRY: dict[str, MechanismSpec] = {}
_discovered = False
#: ``mechanisms()`` and ``genes()``, computed once per state of the registry (validation asks for them
#: several times per architecture); cleared by ``register`` and ``unregister``.
_CACHE: dict[str, tuple] = {}


def _discover() -> None:
    """Import every file of the attention package once and register its ``MECHANISM``."""
    global _discovered
    if _discovered:
        return
    _discovered = True  # first, so that register() below does not come back here
    try:
        package = importlib.import_module(_PACKAGE)
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_"):
                continue
            spec = getattr(importlib.import_module(f"{_PACKAGE}.{info.name}"), "MECHANISM", None)
            if isinstance(spec, MechanismSpec):
                register(spec)
    except BaseException:
        _discovered = False
        _REGISTRY.clear()
        _CACHE.clear()
        raise


def register(spec: MechanismSpec) -> MechanismSpec:
    """Add ``spec`` to the registry (a file of :mod:`search_spaces.attention` is found without this;
    call it for a mechanism defined elsewhere, e.g. in a test or a plugin).

    Raises:
        ValueError: the name or the order is already taken, or a gene name clashes with a different
            gene of the same name.
    """
    _discover()
    for other in _REGISTRY.values():
        if other.name == spec.name:
            raise ValueError(f"attention: {spec.name!r} is already registered")
        if other.order == spec.order:
            raise ValueError(f"attention: order {spec.order} of {spec.name!r} is taken by {other.name!r}")
    known = {g.name: g for g in genes()}
    for gene in spec.all_genes:
        if gene.name in known and known[gene.name] != gene:
            raise ValueError(f"{gene.name}: {spec.name!r} declares a gene of that name that differs from "
                             "the registered one")
    _REGISTRY[spec.name] = spec
    _CACHE.clear()
    return spec


def unregister(name: str) -> MechanismSpec:
    """Remove the mechanism ``name`` from the registry and return its spec.

    Raises:
        GeneError: no such mechanism.
    """
    spec = get_mechanism(name)
    del _REGISTRY[name]
    _CACHE.clear()
    return spec


def mechanisms() -> tuple[MechanismSpec, ...]:
    """Every registered mechanism, in display order (:attr:`MechanismSpec.order`)."""
    _discover()
    if "mechanisms" not in _CACHE:
        _CACHE["mechanisms"] = tuple(sorted(_REGISTRY.values(), key=lambda s: s.order))
    return _CACHE["mechanisms"]


def names() -> tuple[str, ...]:
    """The names of :func:`mechanisms`, in display order: the universe of the ``attention`` gene."""
    return tuple(s.name for s in mechanisms())


def get_mechanism(name: str) -> MechanismSpec:
    """The spec of the mechanism called ``name``.

    Raises:
        GeneError: no such mechanism (the message lists the allowed names).
    """
    _discover()
    spec = _REGISTRY.get(name) if isinstance(name, str) else None
    if spec is None:
        raise GeneError(f"attention: unknown value {name!r}; allowed: {', '.join(names())}")
    return spec


def genes() -> tuple[GeneSpec, ...]:
    """Every attention-specific gene of the registered mechanisms, once each, ``compact`` first, then in
    the order of the mechanisms and of their genes."""
    if "genes" not in _CACHE:
        seen: dict[str, GeneSpec] = {}
        for spec in mechanisms():
            for gene in spec.all_genes:
                seen.setdefault(gene.name, gene)
        _CACHE["genes"] = tuple(seen.values())
    return _CACHE["genes"]


def gene(name: str) -> GeneSpec:
    """The registered attention-specific gene called ``name`` (e.g. ``"qna_window"``).

    Raises:
        GeneError: no registered mechanism takes a gene of that name.
    """
    for g in genes():
        if g.name == name:
            return g
    raise GeneError(f"{name}: not a gene of any registered mechanism; known: {', '.join(g.name for g in genes())}")


def owners(gene: str) -> tuple[str, ...]:
    """Names of the mechanisms that take the gene called ``gene``, in display order."""
    return tuple(s.name for s in mechanisms() if any(g.name == gene for g in s.all_genes))
