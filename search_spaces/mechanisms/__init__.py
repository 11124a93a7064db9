"""What vitnas knows about each attention mechanism, without torch: one file per mechanism.

Every file here declares ``MECHANISM = MechanismSpec(...)`` (name, paper, flags, its own genes, the rules
that follow its constants with the token count, canonicalisation) and the pure-Python rules its layer and
its genes share (``linformer_k``, ``mait_window_for_ratio``, ...). The layer itself, an ``nn.Module``, is
the file of the same name in :mod:`search_spaces.attention`, which the spec names as a string
(``"search_spaces.attention.mhsa:MHSA"``) and :mod:`search_spaces.registry` imports on first use.

The split is the one of Hugging Face transformers' ``configuration_*.py`` / ``modeling_*.py``: the gene
registry, the search space, ``vitnas space``, ``pareto`` and the dashboards load these files only, so they
answer without importing torch or timm (several seconds); building a model imports the layers.

Nothing in this package may import torch, timm or Ray (``tests/test_registry.py`` checks it).
"""
