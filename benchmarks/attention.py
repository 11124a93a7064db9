"""Attention zoo benchmark: throughput (tokens/s) and peak memory of every mechanism, side by side with
the peers a user would otherwise pick, in the same run on the same machine.

    python -m benchmarks.attention                 # full: N = 64, 256, 784, 1024, 3136, 4096
    python -m benchmarks.attention --quick         # N = 64, 256, 784, 1024, fewer rounds (a few minutes)
    python -m benchmarks.attention --device cuda   # on a GPU (its own section of docs/benchmarks.md)

Setup: embed_dim 128, 4 heads (d = 32), tokens on a square grid without class token (N = 8^2 ... 64^2, with
784 = 28^2 and 3,136 = 56^2, the grids of a 112 px deployment at patch sizes 4 and 2),
batch chosen so that every row processes the same number of tokens (``--tokens``, default 4096 per call).
Forward is timed under ``torch.no_grad``; forward+backward runs ``out.sum().backward()`` with the input
requiring grad (as inside a network). Every module at one N is timed round-robin (one call of each per
round, median over rounds) so load from other processes falls on all of them alike. Peak memory is the
peak of tensors alive at once that the pass created (activations, and gradients for forward+backward),
by :class:`trainers.measure.PeakMemoryTracker` on CPU and by the CUDA allocator's peak minus what was
allocated before the pass on GPUs; weights and the input are not counted.

Peers (the ``bench`` extra; never runtime dependencies): timm's ``Attention`` (for mhsa),
``performer_pytorch.SelfAttention``, ``linformer.LinformerSelfAttention``, ``nystrom_attention.NystromAttention``,
and a plain sliding-window local attention built with ``unfold`` (defined here) for QnA. Before timing, every
peer with the same mathematics is checked against the vitnas module with shared weights.
"""

from __future__ import annotations

import argparse
import gc
import math
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks import _common as C
from search_spaces.attention.common import TokenLayout
from search_spaces.attention.fnet import FNetMixing
from search_spaces.attention.linformer import LinformerAttention, linformer_k
from search_spaces.attention.mait import MaiTAttention
from search_spaces.attention.mhsa import MHSA
from search_spaces.attention.mixer import TokenMixingMLP
from search_spaces.attention.nystrom import NystromAttention, nystrom_conv_kernel, nystrom_landmarks
from search_spaces.attention.performer import PerformerAttention, favor_attention, performer_num_features
from search_spaces.attention.qna import QnAAttention, qna_window_for_grid
from search_spaces.attention.refiner import RefinerAttention
from trainers.measure import PeakMemoryTracker

DIM, HEADS = 128, 4
LINEAR_COST = ("qna", "performer", "linformer", "nystrom", "fnet", "mixer")
#: vitnas mechanism -> the peer a user would otherwise pick.
PEER_OF = {"mhsa": "timm Attention", "mhsa+compact": "timm Attention",
           "performer": "performer-pytorch", "performer+compact": "performer-pytorch",
           "linformer": "linformer package", "linformer+compact": "linformer package",
           "nystrom": "nystrom-attention", "nystrom+compact": "nystrom-attention",
           "qna": "unfold local w3"}


# ---------------------------------------------------------------------- the unfold baseline
class UnfoldLocalAttention(nn.Module):
    """Plain sliding-window local attention on the token grid (stand-alone self-attention style): every
    token's own query attends to the k x k neighbourhood around it, gathered with ``F.unfold``; positions
    outside the grid are masked. Keys and values are materialised per window, so memory grows with k^2 —
    the kind of local attention QnA (arXiv 2112.11435) claims to beat.

    Shapes: ``x`` (B, N, C) with N = R x C' from ``layout.grid`` -> (B, N, C).
    """

    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads, self.window = num_heads, window
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        b, n, c = x.shape
        rows, cols = layout.grid
        h, w = self.num_heads, self.window
        d = c // h
        q, k, v = self.qkv(x).view(b, n, 3, h, d).permute(2, 0, 3, 4, 1).unbind(0)  # (B, H, d, N)
        unfold = lambda t: F.unfold(t.reshape(b, c, rows, cols), w, padding=w // 2).view(b, h, d, w * w, n)  # noqa: E731
        k_win, v_win = unfold(k), unfold(v)                                              # (B, H, d, w^2, N)
        inside = F.unfold(x.new_ones(1, 1, rows, cols), w, padding=w // 2).view(1, 1, w * w, n) > 0
        scores = torch.einsum("bhdn,bhdwn->bhwn", q * self.scale, k_win).masked_fill(~inside, float("-inf"))
        out = torch.einsum("bhwn,bhdwn->bhdn", scores.softmax(dim=2), v_win)             # (B, H, d, N)
        return self.proj(out.reshape(b, c, n).transpose(1, 2))


def dense_local_reference(m: UnfoldLocalAttention, x: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """The same local attention through a dense N x N score map with a window mask (for the check)."""
    b, n, c = x.shape
    rows, cols = layout.grid
    h, d, r = m.num_heads, c // m.num_heads, m.window // 2
    q, k, v = m.qkv(x).view(b, n, 3, h, d).permute(2, 0, 3, 1, 4).unbind(0)
    yy, xx = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    yy, xx = yy.flatten(), xx.flatten()
    allowed = ((yy[:, None] - yy[None]).abs() <= r) & ((xx[:, None] - xx[None]).abs() <= r)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed)
    return m.proj(out.transpose(1, 2).reshape(b, n, c))


# ---------------------------------------------------------------------- modules under test
def grid_for(n: int) -> tuple[int, int]:
    s = int(round(math.sqrt(n)))
    if s * s != n:
        raise ValueError(f"tokens: {n} is not a square number")
    return s, s


def vitnas_modules(n: int) -> dict[str, nn.Module]:
    """Every mechanism at N = ``n`` with the settings the model builder uses at that token count."""
    mods: dict[str, nn.Module] = {}
    for compact in (False, True):
        tag = "+compact" if compact else ""
        mods["mhsa" + tag] = MHSA(DIM, HEADS, compact=compact)
        mods["mait" + tag] = MaiTAttention(DIM, HEADS, mask_ratios=(0.9, 0.9, 0.9, 0.9), compact=compact)
        mods["refiner" + tag] = RefinerAttention(DIM, HEADS, expansion=3, compact=compact)
        mods["performer" + tag] = PerformerAttention(DIM, HEADS, compact=compact, scale_with_tokens=True)
        mods["linformer" + tag] = LinformerAttention(DIM, HEADS, num_tokens=n, k=linformer_k(n), compact=compact)
        mods["nystrom" + tag] = NystromAttention(DIM, HEADS, compact=compact, scale_with_tokens=True)
    mods["qna"] = QnAAttention(DIM, HEADS, window=qna_window_for_grid(3, grid_for(n)))
    mods["fnet"] = FNetMixing(DIM)
    mods["mixer"] = TokenMixingMLP(DIM, num_tokens=n)
    order = ["mhsa", "mait", "refiner", "qna", "performer", "linformer", "nystrom", "fnet", "mixer"]
    return {k: mods[k] for o in order for k in (o, o + "+compact") if k in mods}


class _Peer(nn.Module):
    """Adapts a peer module to the zoo's ``forward(x, layout)``."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, layout: TokenLayout | None = None) -> torch.Tensor:
        return self.module(x)


def peer_modules(n: int) -> dict[str, nn.Module]:
    """The peers at N = ``n``, with the same token-count settings as :func:`vitnas_modules`."""
    from linformer import LinformerSelfAttention
    from nystrom_attention import NystromAttention as PeerNystrom
    from performer_pytorch import SelfAttention as PeerPerformer
    from timm.models.vision_transformer import Attention as TimmAttention

    d = DIM // HEADS
    return {
        "timm Attention": _Peer(TimmAttention(DIM, HEADS, qkv_bias=True)),
        "performer-pytorch": _Peer(PeerPerformer(dim=DIM, heads=HEADS, dim_head=d, qkv_bias=True,
                                                 nb_features=performer_num_features(d, n))),
        "linformer package": _Peer(LinformerSelfAttention(DIM, seq_len=n, k=linformer_k(n), heads=HEADS,
                                                          share_kv=False)),
        "nystrom-attention": _Peer(PeerNystrom(dim=DIM, dim_head=d, heads=HEADS, num_landmarks=nystrom_landmarks(n),
                                               pinv_iterations=6, residual=True,
                                               residual_conv_kernel=nystrom_conv_kernel(n))),
        "unfold local w3": UnfoldLocalAttention(DIM, HEADS, 3),
    }


# ---------------------------------------------------------------------- shared-weight checks
class _PerformerEps(PerformerAttention):
    """vitnas' Performer with the feature epsilon of performer-pytorch (1e-4 instead of 1e-6), for the check."""

    def _attend(self, q, k, v, num_features=None):
        projection = self.projection if num_features is None else self.projection[:num_features]
        return favor_attention(q.float(), k.float(), v.float(), projection.float(), eps=1e-4).to(v.dtype)


@torch.no_grad()
def _share_qkv(ours: nn.Module, q_w, k_w, v_w, q_b=None, k_b=None, v_b=None) -> None:
    ours.qkv.qkv.weight.copy_(torch.cat([q_w, k_w, v_w]))
    if q_b is None:
        ours.qkv.qkv.bias.zero_()
    else:
        ours.qkv.qkv.bias.copy_(torch.cat([q_b, k_b, v_b]))


def _max_rel(a: torch.Tensor, b: torch.Tensor) -> tuple[float, float]:
    diff = (a - b).abs().max().item()
    return diff, diff / max(b.abs().max().item(), 1e-12)


@torch.no_grad()
def equivalence_checks(device: torch.device) -> list[dict]:
    """Shared weights, same input: the vitnas module and its peer give the same outputs.

    Inputs and weights are float64; vitnas' performer and nystrom compute their core in float32 by design
    (autocast-proof), so those pairs agree to float32 rounding; the tolerance is 1e-6 relative."""
    from linformer import LinformerSelfAttention
    from nystrom_attention import NystromAttention as PeerNystrom
    from performer_pytorch import SelfAttention as PeerPerformer
    from timm.models.vision_transformer import Attention as TimmAttention

    torch.manual_seed(0)
    d = DIM // HEADS
    n, grid = 256, (16, 16)
    layout = TokenLayout(grid=grid)
    x = torch.randn(2, n, DIM, dtype=torch.float64, device=device)
    rows = []

    def record(pair, setting, ours, peer, tol):
        diff, rel = _max_rel(ours, peer)
        rows.append({"pair": pair, "setting": setting, "max_abs_diff": diff, "max_rel_diff": rel, "tol": tol,
                     "same": rel <= tol})

    # mhsa vs timm Attention
    peer = TimmAttention(DIM, HEADS, qkv_bias=True).double().to(device).eval()
    ours = MHSA(DIM, HEADS).double().to(device).eval()
    ours.qkv.qkv.load_state_dict(peer.qkv.state_dict())
    ours.proj.load_state_dict(peer.proj.state_dict())
    record("mhsa / timm Attention", "N 256, B 2", ours(x, layout), peer(x), 1e-6)

    # performer vs performer-pytorch (same projection matrix)
    peer = PeerPerformer(dim=DIM, heads=HEADS, dim_head=d, qkv_bias=True).double().to(device).eval()
    for cls, label, tol in ((_PerformerEps, "feature eps 1e-4 (the peer's)", 1e-6),
                            (PerformerAttention, "vitnas default feature eps 1e-6", None)):
        ours = cls(DIM, HEADS).double().to(device).eval()
        _share_qkv(ours, peer.to_q.weight, peer.to_k.weight, peer.to_v.weight, peer.to_q.bias, peer.to_k.bias,
                   peer.to_v.bias)
        ours.proj.load_state_dict(peer.to_out.state_dict())
        ours.projection.copy_(peer.fast_attention.projection_matrix)
        out_o, out_p = ours(x, layout), peer(x)
        if tol is None:
            diff, rel = _max_rel(out_o, out_p)
            rows.append({"pair": "performer / performer-pytorch", "setting": f"N 256, B 2, {label}",
                         "max_abs_diff": diff, "max_rel_diff": rel, "tol": None, "same": None})
        else:
            record("performer / performer-pytorch", f"N 256, B 2, {label}", out_o, out_p, tol)

    # linformer vs linformer (separate K and V layers, one E shared by keys and values)
    peer = LinformerSelfAttention(DIM, seq_len=n, k=64, heads=HEADS, share_kv=False).double().to(device).eval()
    peer.proj_v.data.copy_(peer.proj_k.data)
    ours = LinformerAttention(DIM, HEADS, num_tokens=n, k=64).double().to(device).eval()
    _share_qkv(ours, peer.to_q.weight, peer.to_k.weight, peer.to_v.weight)
    ours.proj.load_state_dict(peer.to_out.state_dict())
    ours.token_proj.data.copy_(peer.proj_k.data.t())
    record("linformer / linformer package", "N 256, B 2, no Q/K/V bias, E_k = E_v", ours(x, layout), peer(x), 1e-6)

    # nystrom vs nystrom-attention: identical maths when the pseudo-inverse's norms coincide (one image,
    # one head); otherwise they differ by the documented per-matrix vs whole-batch normaliser.
    for heads, b, tol in ((1, 1, 1e-6), (HEADS, 2, None)):
        peer = PeerNystrom(dim=DIM, dim_head=DIM // heads, heads=heads, num_landmarks=16).double().to(device).eval()
        ours = NystromAttention(DIM, heads).double().to(device).eval()
        q_w, k_w, v_w = peer.to_qkv.weight.chunk(3)
        _share_qkv(ours, q_w, k_w, v_w)
        ours.proj.load_state_dict(peer.to_out[0].state_dict())
        ours.conv.weight.copy_(peer.res_conv.weight)
        xb = x[:b]
        setting = f"N 256, B {b}, H {heads}, no Q/K/V bias"
        if tol is None:
            diff, rel = _max_rel(ours(xb, layout), peer(xb))
            rows.append({"pair": "nystrom / nystrom-attention", "setting": setting + " (pinv norms differ)",
                         "max_abs_diff": diff, "max_rel_diff": rel, "tol": None, "same": None})
        else:
            record("nystrom / nystrom-attention", setting, ours(xb, layout), peer(xb), tol)

    # the unfold baseline vs a dense masked reference (no peer package: checks our own baseline)
    for w in (3, 7):
        base = UnfoldLocalAttention(DIM, HEADS, w).double().to(device).eval()
        record(f"unfold local w{w} / dense masked attention", "N 256, B 2", base(x, layout),
               dense_local_reference(base, x, layout), 1e-6)
    return rows


# ---------------------------------------------------------------------- measurement
def _fwd(m, x, layout):
    def run():
        with torch.no_grad():
            m(x, layout)
    return run


def _fwd_bwd(m, x, layout):
    xg = x.detach().clone().requires_grad_(True)

    def run():
        m.zero_grad(set_to_none=True)
        xg.grad = None
        m(xg, layout).sum().backward()
    return run


def peak_bytes(m: nn.Module, x: torch.Tensor, layout: TokenLayout, train: bool, device: torch.device) -> int:
    """Peak bytes of tensors the pass created (forward, or forward+backward when ``train``)."""
    m.zero_grad(set_to_none=True)
    xg = x.detach().clone().requires_grad_(train)
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        if train:
            m(xg, layout).sum().backward()
        else:
            with torch.no_grad():
                m(xg, layout)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    else:
        tracker = PeakMemoryTracker()
        with tracker:
            if train:
                m(xg, layout).sum().backward()
            else:
                with torch.no_grad():
                    m(xg, layout)
        peak = tracker.peak
    m.zero_grad(set_to_none=True)
    return int(peak)


def measure_n(n: int, tokens: int, rounds: int, device: torch.device, budget_s: float) -> list[dict]:
    """Every vitnas module and peer at N = ``n``: tokens/s forward and forward+backward, peak memory."""
    torch.manual_seed(0)
    grid = grid_for(n)
    layout = TokenLayout(grid=grid)
    batch = max(1, tokens // n)
    mods = {**{k: ("vitnas", m) for k, m in vitnas_modules(n).items()},
            **{k: ("peer", m) for k, m in peer_modules(n).items()}}
    for _, m in mods.values():
        m.to(device).train()  # no dropout anywhere here; train mode as inside a training step
    x = torch.randn(batch, n, DIM, device=device)
    rows = []
    print(f"  N={n:5d} (grid {grid[0]}x{grid[1]}, batch {batch}): ", end="", flush=True)
    t0 = time.perf_counter()
    fwd = C.interleaved_best({k: _fwd(m, x, layout) for k, (_, m) in mods.items()}, device, rounds,
                             budget_s=budget_s)
    fb = C.interleaved_best({k: _fwd_bwd(m, x, layout) for k, (_, m) in mods.items()}, device, rounds,
                            budget_s=budget_s)
    for name, (kind, m) in mods.items():
        rows.append({"n": n, "batch": batch, "name": name, "kind": kind,
                     "params": sum(p.numel() for p in m.parameters()),
                     "fwd_tok_s": batch * n / fwd[name], "fb_tok_s": batch * n / fb[name],
                     "mem_fwd": peak_bytes(m, x, layout, False, device),
                     "mem_fb": peak_bytes(m, x, layout, True, device)})
    print(f"{time.perf_counter() - t0:.0f} s", flush=True)
    del mods
    gc.collect()
    return rows


def window_memory(ns: list[int], tokens: int, device: torch.device) -> list[dict]:
    """Peak memory (forward+backward and forward) of QnA and the unfold baseline at windows 3, 5, 7."""
    rows = []
    for n in ns:
        layout = TokenLayout(grid=grid_for(n))
        batch = max(1, tokens // n)
        x = torch.randn(batch, n, DIM, device=device)
        for w in (3, 5, 7):
            for name, m in (("qna", QnAAttention(DIM, HEADS, window=w)),
                            ("unfold local", UnfoldLocalAttention(DIM, HEADS, w))):
                m.to(device)
                rows.append({"n": n, "window": w, "name": name, "mem_fb": peak_bytes(m, x, layout, True, device),
                             "mem_fwd": peak_bytes(m, x, layout, False, device)})
    return rows


# ---------------------------------------------------------------------- report
def _lookup(rows, n, name, key):
    for r in rows:
        if r["n"] == n and r["name"] == name:
            return r[key]
    return float("nan")


def figures(rows, mem_rows, suffix: str) -> list[Path]:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    paths = []
    ns = sorted({r["n"] for r in rows})
    names = list(dict.fromkeys(r["name"] for r in rows))
    fig = make_subplots(rows=1, cols=2, subplot_titles=("forward", "forward + backward"))
    palette = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
               "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173"]
    for i, name in enumerate(names):
        kind = next(r["kind"] for r in rows if r["name"] == name)
        style = dict(dash="dot" if kind == "peer" else ("dash" if "+compact" in name else "solid"),
                     color=palette[i % len(palette)])
        for col, key in ((1, "fwd_tok_s"), (2, "fb_tok_s")):
            fig.add_trace(go.Scatter(x=ns, y=[_lookup(rows, n, name, key) for n in ns], name=name, mode="lines+markers",
                                     line=style, legendgroup=name, showlegend=col == 1), row=1, col=col)
    fig.update_xaxes(type="log", title_text="tokens N", tickvals=ns)
    fig.update_yaxes(type="log", title_text="tokens/s")
    fig.update_layout(title=f"Attention throughput ({suffix}; dotted: peers, dashed: compact)", width=1300, height=820)
    paths.append(C.save_figure(fig, f"attention_throughput_{suffix}"))

    pairs = [(v, p) for v, p in PEER_OF.items() if any(r["name"] == v for r in rows)]
    fig = go.Figure()
    for n in ns:
        fig.add_trace(go.Bar(name=f"N={n}", x=[f"{v} / {p}" for v, p in pairs],
                             y=[_lookup(rows, n, v, "fb_tok_s") / _lookup(rows, n, p, "fb_tok_s") for v, p in pairs]))
    fig.add_hline(y=1.0, line_dash="dash", annotation_text="goal 1.0")
    fig.update_layout(title=f"vitnas / peer forward+backward throughput ratio ({suffix})", yaxis_title="ratio",
                      barmode="group", width=1100, height=520, yaxis_type="log")
    paths.append(C.save_figure(fig, f"attention_peer_ratio_{suffix}"))

    fig = go.Figure()
    for name, dash in (("qna", "solid"), ("unfold local", "dot")):
        for n in sorted({r["n"] for r in mem_rows}):
            pts = sorted((r["window"], r["mem_fb"]) for r in mem_rows if r["name"] == name and r["n"] == n)
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] / 2**20 for p in pts], mode="lines+markers",
                                     name=f"{name}, N={n}", line=dict(dash=dash)))
    fig.update_layout(title=f"Peak memory (forward+backward) against window ({suffix})", xaxis_title="window k",
                      yaxis_title="MiB", yaxis_type="log", width=900, height=520)
    fig.update_xaxes(tickvals=[3, 5, 7])
    paths.append(C.save_figure(fig, f"attention_qna_memory_{suffix}"))
    return paths


#: What would close a missed peer goal, by mechanism (from profiles taken after the first full run, N=4096,
#: one thread: see the final report of the issue).
CLOSERS = {
    "mhsa": "both call the same `scaled_dot_product_attention`; the ratios sit at 0.96-1.01 apart from single noisy "
            "rounds, i.e. parity within this shared machine's noise. Nothing to close in the mechanism.",
    "performer": "the same operations (two feature maps, two matmuls); forward+backward sits at 0.99-1.03, and the "
                 "forward dips do not repeat across N, so no systematic gap was found; more rounds on an idle "
                 "machine would settle it.",
    "linformer": "without rotary encoding vitnas now projects the key/value slice of the fused qkv output, "
                 "(B, N, 2C), with one token-axis matmul before splitting heads, as the package does (the "
                 "first run, per head on permuted K and V, measured 0.84 forward); the remaining dips below 1.0 "
                 "are single forward+backward points at small N, within this shared machine's noise. With "
                 "RoPE the per-head path stays (keys must be rotated per head before the projection).",
    "nystrom": "the depthwise convolution of the values (kernel 33) is 45 % of the forward time in both; the gap "
               "is layout work: about 30 copy ops from the float32 casts and the fused-QKV permute, and landmarks "
               "built by an (N x m) averaging matmul (a view-and-mean when m divides N measured 4 % faster "
               "forward at N=4096).",
}


def report(rows, mem_rows, checks, args, device, seconds, paths, date: str | None = None) -> str:
    ns = sorted({r["n"] for r in rows})
    out = [f"## Attention zoo ({'GPU: ' + C.gpu_name() if device.type == 'cuda' else 'CPU'})\n",
           C.run_header("python -m benchmarks.attention" + (" --quick" if args.quick else "")
                        + ("" if device.type == "cpu" else f" --device {device.type}"), seconds, date=date),
           f"- Setup: torch threads {torch.get_num_threads()}, embed_dim {DIM}, {HEADS} heads (d = {DIM // HEADS}), "
           "square token grid without class "
           f"token, {args.tokens} tokens per call (batch = {args.tokens} / N), {args.rounds} rounds per "
           "measurement, round-robin over all modules at one N, best (fastest) round reported — on a shared "
           "machine the least load-affected estimate; forward under `no_grad`, "
           "forward+backward = `out.sum().backward()` with the input requiring grad; throughput in tokens/s. "
           "Peak memory: tensors the pass created (activations; plus gradients for forward+backward), "
           "weights and input excluded"
           + (" (`PeakMemoryTracker`)." if device.type == "cpu"
              else " (CUDA allocator peak minus what was allocated before the pass)."),
           "- Mechanism settings, as the model builder scales them with the token count N: mait masks 0.9 on "
           "all 4 heads (the `mait` preset; the window closest to 90% hidden on each grid, at least 3x3), "
           "refiner expansion 3, qna window 3 (2 learned queries; clamped below the grid side), performer "
           "m = min(floor(d ln d), floor(N/4)) features (16 at N = 64, 64 at 256, 110 from 784 on), linformer "
           "k = min(64, floor(N/4)) (16 at N = 64, 64 from 256 on), nystrom min(16, floor(N/8)) landmarks "
           "(8 at N = 64, 16 from 128 on), 6 pinv iterations, conv kernel min(33, 2 floor(N/32) + 1) "
           "(5 at N = 64, 17 at 256, 33 from 512 on), mixer hidden max(C/2, 256) (independent of N, as in the "
           "paper). Peers take the same per-N settings.",
           "- Peers (bench extra, `pip install -e .[bench]`): `timm.models.vision_transformer.Attention`, "
           "`performer_pytorch.SelfAttention`, `linformer.LinformerSelfAttention` (share_kv=False, k=64), "
           "`nystrom_attention.NystromAttention` (16 landmarks, conv 33), and `UnfoldLocalAttention` "
           "(benchmarks/attention.py: per-token queries over a k x k window gathered with `F.unfold`).",
           "- The machine is shared with other jobs (test runs of other workers): absolute figures are noisy; "
           "ratios within one N are taken from interleaved rounds and are the figures to read.\n"]

    out.append("### Same mathematics: shared-weight checks (float64 inputs, tolerance 1e-6 relative)\n")
    out.append(C.table(["pair", "setting", "max abs diff", "max rel diff", "same outputs"],
                       [[c["pair"], c["setting"], f"{c['max_abs_diff']:.2e}", f"{c['max_rel_diff']:.2e}",
                         ("yes" if c["same"] else "**no**") if c["same"] is not None else "differs as documented"]
                        for c in checks], "lllrr"))
    out.append("\nThe two rows marked 'differs as documented' are deliberate differences stated in the zoo's "
               "docstrings: vitnas' FAVOR+ adds eps 1e-6 to every feature (performer-pytorch 1e-4), and vitnas' "
               "Nystrom pseudo-inverse normalises each matrix by its own norms (nystrom-attention by the maxima "
               "over the whole batch and all heads). With those constants matched the outputs agree to float32 "
               "rounding (vitnas computes the FAVOR+ and Nystrom cores in float32 by design; the others agree to "
               "float64 rounding).\n")

    goal_rows = []
    # goal 1: at least as fast as the peer
    for v, p in PEER_OF.items():
        ratios_f = [_lookup(rows, n, v, "fwd_tok_s") / _lookup(rows, n, p, "fwd_tok_s") for n in ns]
        ratios_b = [_lookup(rows, n, v, "fb_tok_s") / _lookup(rows, n, p, "fb_tok_s") for n in ns]
        worst = min(ratios_f + ratios_b)
        goal_rows.append([f"{v} at least as fast as {p} (ratio >= 1.0)",
                          "fwd " + ", ".join(f"{r:.2f}" for r in ratios_f) + "; fwd+bwd "
                          + ", ".join(f"{r:.2f}" for r in ratios_b), f"{worst:.2f}", C.goal(worst >= 1.0)])
    # goal 2: linear-cost mechanisms at 4096 tokens
    big = max(ns)
    base = _lookup(rows, big, "mhsa", "fb_tok_s")
    for name in LINEAR_COST:
        r = _lookup(rows, big, name, "fb_tok_s") / base
        goal_rows.append([f"{name}: fwd+bwd throughput >= 3x mhsa at N={big}" + ("" if big == 4096 else " (goal is at 4096)"),
                          f"{r:.2f}x", f"{r:.2f}", C.goal(r >= 3.0) if big == 4096 else "n/a (quick run)"])
    # goal 3: QnA memory growth
    for n in sorted({r["n"] for r in mem_rows}):
        get = lambda name, w, n=n: next(r["mem_fb"] for r in mem_rows  # noqa: E731
                                        if r["n"] == n and r["name"] == name and r["window"] == w)
        q = get("qna", 7) / get("qna", 3)
        u = get("unfold local", 7) / get("unfold local", 3)
        goal_rows.append([f"qna peak memory (fwd+bwd) w7 / w3 <= 1.2, N={n}", f"qna {q:.2f}x, unfold {u:.2f}x",
                          f"{q:.2f}", C.goal(q <= 1.2 and u >= 2.0)])
    out.append("### Goals\n")
    out.append(C.table(["goal", "measured (per N: " + ", ".join(map(str, ns)) + ")", "worst", "verdict"],
                       goal_rows, "lllr"))
    missed = [g for g in goal_rows if "missed" in g[3]]
    if missed:
        out.append("\n**Missed goals, measured ratio and what would close them.**\n")
        for g in missed:
            mech = g[0].split(" ")[0].split("+")[0].rstrip(":")
            out.append(f"- {g[0]}: worst ratio {g[2]}. {CLOSERS.get(mech, '')}")
        out.append("")

    out.append("\n### Throughput and peak memory\n")
    out.append("`vs mhsa` and `vs peer` are forward+backward throughput ratios (forward ratio in brackets); "
               "memory in MiB.\n")
    for n in ns:
        batch = next(r["batch"] for r in rows if r["n"] == n)
        out.append(f"\n**N = {n}** (grid {int(math.sqrt(n))}x{int(math.sqrt(n))}, batch {batch})\n\n")
        body = []
        for r in (r for r in rows if r["n"] == n):
            peer = PEER_OF.get(r["name"])
            vs_mhsa = r["fb_tok_s"] / _lookup(rows, n, "mhsa", "fb_tok_s")
            vs_peer = ""
            if peer:
                vs_peer = (f"{r['fb_tok_s'] / _lookup(rows, n, peer, 'fb_tok_s'):.2f} "
                           f"({r['fwd_tok_s'] / _lookup(rows, n, peer, 'fwd_tok_s'):.2f}) vs {peer}")
            body.append([r["name"] + (" (peer)" if r["kind"] == "peer" else ""), f"{r['params']:,}",
                         C.si(r["fwd_tok_s"]), C.si(r["fb_tok_s"]), C.mib(r["mem_fwd"]), C.mib(r["mem_fb"]),
                         f"{vs_mhsa:.2f}", vs_peer])
        out.append(C.table(["module", "params", "fwd tok/s", "fwd+bwd tok/s", "peak MiB fwd", "peak MiB fwd+bwd",
                            "vs mhsa", "vs peer"], body, "lrrrrrrl"))

    out.append("\n### QnA against the unfold local attention: peak memory by window\n\n")
    body = []
    for n in sorted({r["n"] for r in mem_rows}):
        for name in ("qna", "unfold local"):
            vals = {r["window"]: r for r in mem_rows if r["n"] == n and r["name"] == name}
            body.append([f"{name}, N={n}"] + [f"{C.mib(vals[w]['mem_fwd'])} / {C.mib(vals[w]['mem_fb'])}" for w in (3, 5, 7)]
                        + [f"{vals[7]['mem_fb'] / vals[3]['mem_fb']:.2f}x"])
    out.append(C.table(["module", "w3 MiB fwd / fwd+bwd", "w5", "w7", "growth w3 -> w7 (fwd+bwd)"], body, "lrrrr"))
    out.append("\n" + "".join(C.figure_link(p, p.stem.replace("_", " ")) for p in paths))
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="N = 64, 256, 784, 1024 only (a few minutes on 2 cores)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda")
    ap.add_argument("--tokens", type=int, default=None, help="tokens per call (batch x N); default 4096")
    ap.add_argument("--rounds", type=int, default=None, help="timed rounds per measurement; default 3")
    ap.add_argument("--ns", type=int, nargs="*", default=None, help="token counts (square numbers)")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads; default 1 on CPU (the 2-core machine is shared: two threads meeting "
                         "another busy process make timings erratic), torch's default on CUDA")
    ap.add_argument("--replot", action="store_true",
                    help="redraw the figures and rewrite the doc section from benchmarks/results/attention_<device>.json")
    ap.add_argument("--no-doc", action="store_true", help="do not rewrite docs/benchmarks.md")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("--device cuda: no CUDA device here", file=sys.stderr)
        return 2
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    if args.replot:
        import json

        saved = json.loads((C.RESULTS / f"attention_{device.type}.json").read_text())
        paths = figures(saved["rows"], saved["window_memory"], device.type)
        for p in paths:
            print(f"figure:  {p}")
        if not args.no_doc:
            old = argparse.Namespace(**saved["args"])
            text = report(saved["rows"], saved["window_memory"], saved["checks"], old, device,
                          saved.get("seconds"), paths, date=saved["date"])
            suffix = device.type
            print("doc:    ", C.write_section(f"attention-{suffix}" if suffix != "cpu" else "attention", text))
        return 0
    args.tokens = args.tokens or 4096
    args.rounds = args.rounds or 3
    ns = args.ns or ([64, 256, 784, 1024] if args.quick else [64, 256, 784, 1024, 3136, 4096])
    start = time.perf_counter()
    print(f"attention benchmark on {device} ({C.machine()})")
    print("checking peers with shared weights ...", flush=True)
    checks = equivalence_checks(device)
    for c in checks:
        print(f"  {c['pair']:45s} {c['setting']:45s} max rel diff {c['max_rel_diff']:.1e}"
              + ("" if c["same"] is None else ("  same" if c["same"] else "  DIFFERENT")))
    print("timing ...", flush=True)
    rows = []
    for n in ns:
        rows += measure_n(n, args.tokens, args.rounds, device, budget_s=30.0 if args.quick else 60.0)
    print("window memory ...", flush=True)
    mem_rows = window_memory([n for n in ns if n >= 256], args.tokens, device)
    seconds = time.perf_counter() - start
    suffix = device.type
    results = C.save_results(f"attention_{suffix}", {"machine": C.machine(), "date": C.today(), "args": vars(args),
                                                     "seconds": seconds, "checks": checks, "rows": rows,
                                                     "window_memory": mem_rows})
    paths = figures(rows, mem_rows, suffix)
    print(f"results: {results}")
    for p in paths:
        print(f"figure:  {p}")
    if not args.no_doc:
        doc = C.write_section(f"attention-{suffix}" if suffix != "cpu" else "attention",
                              report(rows, mem_rows, checks, args, device, seconds, paths))
        print(f"doc:     {doc} (section 'attention{'' if suffix == 'cpu' else '-' + suffix}')")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
