"""The extremes of a search space at a given input shape: the smallest and largest parameter counts it can build.

The hypervolume normalises params on a log scale between these two counts (``nas.objectives.hv_bounds``;
docs/design.md, "Judging a front"), so they are counted exactly, on real models built on the meta device (no
memory, no initialisation cost), not estimated:

- parameters grow with ``embed_dim``, ``depth`` and ``mlp_ratio`` whatever the other genes, so the smallest
  model takes the smallest of each and the largest the largest;
- a model is its blocks (``depth`` identical parameter counts) plus the rest (stem, position table, class
  token, final norm, head): one depth-1 model per combination of the other genes gives both;
- the stem's parameters depend only on the stem, ``embed_dim``, ``patch_size`` and the input channels, so
  the stems are compared once per ``(embed_dim, patch_size)``;
- of the position encodings only ``learned`` holds parameters; per-head genes and genes that only choose a
  mask (MaiT's ratios and layers) hold none, so one value of each is enough.

Everything else (attention, ``compact``, ``num_heads``, ``patch_size`` and each mechanism's own genes) is
enumerated.
"""

from __future__ import annotations

import functools
import itertools
import json
from typing import Any

from . import registry
from .genes import Architecture, GeneError
from .space import SearchSpace, SpaceError

__all__ = ["params_range", "count_params"]

#: Genes that choose a mask but hold no parameters (one value of each is enough).
_MASK_ONLY = frozenset({"mask_layers"})


def params_range(space: SearchSpace, img_size: int, in_chans: int, num_classes: int) -> tuple[int, int]:
    """``(smallest, largest)`` exact trainable-parameter counts of the models ``space`` can build for
    ``img_size`` x ``img_size`` images with ``in_chans`` channels and ``num_classes`` classes.

    Raises:
        SpaceError: no patch size in the space divides ``img_size``, or no valid architecture exists.
    """
    key = json.dumps(space.to_dict(), sort_keys=True, default=str)
    return _params_range(key, space, int(img_size), int(in_chans), int(num_classes))


@functools.lru_cache(maxsize=32)
def _params_range(key: str, space: SearchSpace, img_size: int, in_chans: int, num_classes: int) -> tuple[int, int]:
    space = space.for_image(img_size)
    ends = []
    for pick in (min, max):
        c, depth, ratio = pick(space.embed_dim), pick(space.depth), pick(space.mlp_ratio)
        counts = [rest + pick(_stem_extra(s, c, arch.patch_size, img_size, in_chans) for s in space.stem)
                  + depth * block
                  for arch, rest, block in _depth_one(space, c, ratio, pick, img_size, in_chans, num_classes)]
        if not counts:
            raise SpaceError("space: no valid architecture in the search space at this image size")
        ends.append(pick(counts))
    return ends[0], ends[1]


def count_params(arch: Architecture, img_size: int, in_chans: int, num_classes: int) -> int:
    """Exact trainable parameters of ``arch`` built for ``img_size`` x ``img_size`` images with ``in_chans``
    channels and ``num_classes`` classes, known before training: equal to ``sum(p.numel())`` of
    ``build_model(arch, ...)``.

    Counted on the meta device (no memory, no initialisation) at depth 1, plus ``depth - 1`` times one block
    (every block of a design holds the same parameters: MaiT's per-layer masks hold none); cached per design
    without its depth, so scoring thousands of candidates builds each shape once.

    Raises:
        GeneError: the genes are invalid or do not fit the image size.
    """
    arch.check_image(img_size)
    total, block = _count_depth_one(arch.replace(depth=1).to_json(), int(img_size), int(in_chans), int(num_classes))
    return total + (arch.depth - 1) * block


@functools.lru_cache(maxsize=4096)
def _count_depth_one(genes: str, img_size: int, in_chans: int, num_classes: int) -> tuple[int, int]:
    return _count(Architecture.from_json(genes), img_size, in_chans, num_classes)


def _count(arch: Architecture, img_size: int, in_chans: int, num_classes: int) -> tuple[int, int]:
    """(all parameters, parameters of one block) of ``arch`` built on the meta device."""
    import torch

    from .model import NasViT

    with torch.device("meta"):
        model = NasViT(arch, img_size=img_size, in_chans=in_chans, num_classes=num_classes)
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    block = sum(p.numel() for p in model.blocks[0].parameters() if p.requires_grad)
    return total, block


def _stem_extra(stem: str, embed_dim: int, patch_size: int, img_size: int, in_chans: int) -> int:
    """Parameters ``stem`` adds over the plain ``patch`` stem (may be negative)."""
    return _stem_params(stem, embed_dim, patch_size, img_size, in_chans) - \
        _stem_params("patch", embed_dim, patch_size, img_size, in_chans)


@functools.lru_cache(maxsize=256)
def _stem_params(stem: str, embed_dim: int, patch_size: int, img_size: int, in_chans: int) -> int:
    import torch

    from .model import NasViT

    arch = Architecture(attention="mhsa", embed_dim=embed_dim, depth=1, num_heads=1, patch_size=patch_size,
                        pos_encoding="none", stem=stem)
    with torch.device("meta"):
        model = NasViT(arch, img_size=img_size, in_chans=in_chans, num_classes=0)
    return sum(p.numel() for p in model.patch_embed.parameters() if p.requires_grad)


def _depth_one(space: SearchSpace, embed_dim: int, mlp_ratio: float, pick: Any, img_size: int, in_chans: int,
               num_classes: int):
    """``(arch, rest, block)`` for every combination that can change the parameter count, at depth 1 with
    the ``patch`` stem: ``rest`` is every parameter outside the blocks, ``block`` one block's."""
    # The position encoding with the fewest (max: the most) parameters: learned holds a table, the others none.
    for attention in space.attention:
        spec = registry.get_mechanism(attention)
        pos_choices = [p for p in space.pos_encoding if spec.has_qkv or not p.startswith("rope")]
        if not pos_choices:
            continue
        learned = "learned" in pos_choices
        others = [p for p in pos_choices if p != "learned"]
        pos = ("learned" if learned else others[0]) if pick is max else (others[0] if others else "learned")
        gene_domains = []
        for gene in spec.all_genes:
            domain = tuple(getattr(space, gene.name))
            if gene.per_head or gene.name in _MASK_ONLY:
                domain = domain[:1]
            gene_domains.append((gene, domain))
        for heads, patch in itertools.product(space.num_heads, space.patch_size):
            for values in itertools.product(*(d for _, d in gene_domains)):
                genes: dict[str, Any] = {}
                for (gene, _), v in zip(gene_domains, values, strict=True):
                    genes[gene.name] = (v,) * heads if gene.per_head else v
                try:
                    arch = Architecture(attention=attention, embed_dim=embed_dim, depth=1, num_heads=heads,
                                        mlp_ratio=mlp_ratio, patch_size=patch, pos_encoding=pos, stem="patch",
                                        **genes)
                    arch.check_image(img_size)
                    total, block = _count(arch, img_size, in_chans, num_classes)
                except (GeneError, ValueError):
                    continue  # a combination the genes or the image size refuse
                yield arch, total - block, block
