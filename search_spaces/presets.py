"""Paper presets: each paper's own design, scaled to the proxy task, as a named :class:`Architecture`.

A search enqueues these as its first trials, so every Pareto front is measured against the papers' own
choices (docs/design.md, "Paper presets"). The proxy task is small images (the embedded default is 16 x 16
single-channel digits), so every preset is scaled down to the same small macro shape unless the paper's
own shape says otherwise: ``embed_dim`` 64, ``depth`` 4, ``patch_size`` 2 (an 8 x 8 token grid on 16 px).
What is kept from each paper is what distinguishes it: the attention mechanism and its own genes, the
stem, the position encoding, the head width and the MLP ratio where they are part of the design. Every
preset lies inside the default :class:`~search_spaces.space.SearchSpace` domain (a test checks it).
"""

from __future__ import annotations

from .genes import Architecture, GeneError

__all__ = ["PRESETS", "get_preset"]

PRESETS: dict[str, Architecture] = {
    # DeiT (Touvron et al., arXiv 2012.12877), the ViT (arXiv 2010.11929) baseline: plain MHSA, learned
    # absolute position embedding, class token, linear patchify, MLP ratio 4. Scaled from DeiT-Tiny
    # (C 192, 12 blocks, 3 heads, 16 px patches on 224 px) to C 64, 4 blocks, 4 heads, 2 px patches.
    "deit": Architecture(attention="mhsa", embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, patch_size=2,
                         pos_encoding="learned", stem="patch"),
    # MaiT (Li et al., arXiv 2207.03006): DeiT with local 0/1 masks on some heads. The paper's finding is
    # that masks matter most early: every head masked in the first third of the layers, one head in the
    # middle third, none in the last (mask_layers="paper"). Its local mask is a 3x3 window on a 14x14 grid
    # (~95% of keys hidden, ratio 0.95 in the domain); on the proxy's 8x8 grid ratio 0.9 maps to the same
    # 3x3 window (87% of a patch's keys hidden, class token counted as visible), as 0.95 does, so all four
    # heads carry 0.9 (kept from before 0.95 joined the domain: the same model at 16 px). At 28 px (14x14)
    # 0.9 maps to 5x5 (89% hidden). Same scaled DeiT shape as "deit" otherwise.
    "mait": Architecture(attention="mait", embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, patch_size=2,
                         pos_encoding="learned", stem="patch", mask_ratios=(0.9, 0.9, 0.9, 0.9),
                         mask_layers="paper"),
    # Refiner (Zhou et al., arXiv 2106.03714): attention expansion + depthwise 3x3 convolution over the
    # maps. Expansion 3 (the paper's Refined-ViT-M/L models; S uses 6). The released Refined-ViT models
    # embed patches with a convolutional stem with BatchNorm and ReLU (7x7 stride-2 conv, two 3x3 convs,
    # then a p/2 patchify) rather than ViT's linear patchify; vitnas's closest stem is "conv_bn" (the
    # early-convolution stem of Xiao et al., arXiv 2106.14881: conv-BN-ReLU then a projection), hence
    # conv_bn. Learned position embedding and class token as in the paper. MLP ratio: the paper's 3 lies
    # between the domain's 2 and 4; 4 (ViT/DeiT's) is used. Scaled like "deit".
    "refiner": Architecture(attention="refiner", embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, patch_size=2,
                            pos_encoding="learned", stem="conv_bn", refiner_expansion=3),
    # QnA-ViT (Arar et al., arXiv 2112.11435): learned-query local attention with window 3 (QnA-ViT-Tiny;
    # 7 in its larger-window variant). No class token (the model pools by global average) and, as the
    # official QnA-ViT configuration, no absolute position encoding: position enters only through the
    # layer's per-offset relative bias, so pos_encoding="none". Linear patchify stem (the official
    # default "patch" stem). Head width: QnA-ViT-Tiny's first stage has C 64 with 8 heads (d = 8); here
    # C 32 with 4 heads keeps d = 8. MLP ratio 4 as in QnA-ViT. Scaled from the hierarchical 4-stage
    # network to one isotropic stage of 4 blocks on the 8x8 grid.
    "qna": Architecture(attention="qna", embed_dim=32, depth=4, num_heads=4, mlp_ratio=4.0, patch_size=2,
                        pos_encoding="none", stem="patch", qna_window=3),
    # Armour (arXiv 2108.01778): compact self-attention dropped into a regular ViT/DeiT. Only the
    # abstract could be read; vitnas's interpretation (search_spaces.attention.common.QKV) drops W_k and
    # W_v, halving the attention parameters. Same scaled DeiT shape as "deit", compact=True.
    "armour": Architecture(attention="mhsa", embed_dim=64, depth=4, num_heads=4, mlp_ratio=4.0, patch_size=2,
                           pos_encoding="learned", stem="patch", compact=True),
    # Vision Xformers (Jeevan and Sethi, arXiv 2107.02239). Their proposed ViX models replace ViT's
    # linear embedding with the hybrid convolutional stem ("conv": three 3x3 convolutions) and the
    # learned 1-D position embedding with 1-D rotary embeddings on queries and keys (rope1d). Their
    # CIFAR-10 models: C 128, 4 blocks, 4 heads of width 32, MLP width 256 (ratio 2), patch size 1 on
    # 32 px. Scaled: C 64, 4 blocks, 2 heads (keeping d = 32), MLP ratio 2, patch size 2 on 16 px (the
    # smallest patch in the domain).
    # ViP: Performer (FAVOR+, arXiv 2009.14794) attention.
    "vix_performer": Architecture(attention="performer", embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0,
                                  patch_size=2, pos_encoding="rope1d", stem="conv"),
    # ViL: Linformer (arXiv 2006.04768) attention, keys and values sharing one token projection.
    "vix_linformer": Architecture(attention="linformer", embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0,
                                  patch_size=2, pos_encoding="rope1d", stem="conv"),
    # ViN: Nystromformer (arXiv 2102.03902) attention with the depthwise-convolution residual on values.
    "vix_nystrom": Architecture(attention="nystrom", embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0,
                                patch_size=2, pos_encoding="rope1d", stem="conv"),
    # Hybrid FNet (FNet, arXiv 2105.03824, in Vision Xformers): Fourier mixing has no queries or keys, so
    # RoPE cannot apply; the authors' hybrid FNet keeps the learned position embedding. Conv stem.
    "vix_fnet": Architecture(attention="fnet", embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0,
                             patch_size=2, pos_encoding="learned", stem="conv"),
    # Hybrid ViT with RoPE (Vision Xformers' quadratic-attention baseline in the hybrid family): plain MHSA
    # with the same conv stem and rope1d as the linear-attention ViX presets above, so the comparison
    # isolates the attention mechanism.
    "vix_hybrid": Architecture(attention="mhsa", embed_dim=64, depth=4, num_heads=2, mlp_ratio=2.0,
                               patch_size=2, pos_encoding="rope1d", stem="conv"),
    # MLP-Mixer (Tolstikhin et al., arXiv 2105.01601): token-mixing MLP in place of attention, no position
    # encoding at all (token mixing is position-aware by construction), linear patchify, channel MLP
    # ratio 4 (Mixer-S/B: D_C = 4C). Scaled from Mixer-S/16 (C 512, 8 layers) to C 64, 4 layers; num_heads
    # is unused by the mixer (2 is any value in the domain). Deliberate difference: vitnas keeps a class
    # token for every mechanism but QnA, where Mixer pools by global average.
    "mixer": Architecture(attention="mixer", embed_dim=64, depth=4, num_heads=2, mlp_ratio=4.0, patch_size=2,
                          pos_encoding="none", stem="patch"),
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
