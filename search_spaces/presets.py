"""Paper presets: each paper's own design, scaled to the proxy task, as a named :class:`Architecture`.

Filled in by the full search-space work; ``deit`` is the ViT/DeiT baseline.
"""

from __future__ import annotations

from .genes import Architecture, GeneError

__all__ = ["PRESETS", "get_preset"]

PRESETS: dict[str, Architecture] = {
    # DeiT (arXiv 2012.12877): plain MHSA, learned position embedding, linear patchify.
    "deit": Architecture(attention="mhsa", embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, patch_size=2),
}


def get_preset(name: str) -> Architecture:
    """The preset called ``name``.

    Raises:
        GeneError: no such preset (the message lists them).
    """
    try:
        return PRESETS[name]
    except KeyError:
        raise GeneError(f"preset: unknown name {name!r}; allowed: {', '.join(PRESETS)}") from None
