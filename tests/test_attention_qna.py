"""QnA attention (arXiv 2112.11435): against a slow per-window softmax reference, stability, memory."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from search_spaces import Architecture, build_model
from search_spaces.attention.common import TokenLayout
from search_spaces.attention.qna import QnAAttention


def _randomise(m: QnAAttention, seed: int = 0) -> QnAAttention:
    """Non-trivial position biases and per-offset weights (the init has zero bias)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.rel_bias.copy_(torch.randn(m.rel_bias.shape, generator=g))
        m.offset_weight.copy_(torch.randn(m.offset_weight.shape, generator=g))
        m.query.mul_(3.0)
    return m


def reference_qna(m: QnAAttention, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Explicit windowed softmax: unfold every k x k neighbourhood, -inf outside the image."""
    b, n, c = x.shape
    rows, cols = grid
    lq, h, d, k = m.num_queries, m.num_heads, m.head_dim, m.window
    x = x.double()
    q = m.query.double().view(lq, h, d)
    q = q / q.norm(dim=-1, keepdim=True).clamp_min(1e-6) / d ** 0.5
    keys = (x @ m.key.weight.double().t()).view(b, n, h, d)
    vals = F.linear(x, m.value.weight.double(), None if m.value.bias is None else m.value.bias.double())
    s = torch.einsum("lhd,bnhd->blhn", q, keys).reshape(b, lq * h, rows, cols)
    s_win = F.unfold(F.pad(s, [k // 2] * 4, value=float("-inf")), k).view(b, lq, h, k * k, n)
    logits = s_win + m.rel_bias.double().view(1, lq, h, k * k, 1)
    a = logits.softmax(dim=3) * m.offset_weight.double().view(1, lq, h, k * k, 1)
    v = vals.transpose(1, 2).reshape(b, c, rows, cols)
    v_win = F.unfold(v, k, padding=k // 2).view(b, h, d, k * k, n)          # zeros outside
    y = torch.einsum("blhon,bhdon->bhdn", a, v_win).reshape(b, c, n).transpose(1, 2)
    return F.linear(y, m.proj.weight.double(), m.proj.bias.double())


@pytest.mark.parametrize("window,grid", [(3, (5, 6)), (5, (4, 7)), (7, (3, 3))])
def test_matches_bruteforce_reference(window, grid):
    torch.manual_seed(0)
    m = _randomise(QnAAttention(16, 4, window=window, num_queries=2))
    x = torch.randn(2, grid[0] * grid[1], 16)
    out = m(x, TokenLayout(grid=grid))
    torch.testing.assert_close(out.double(), reference_qna(m, x, grid), rtol=1e-4, atol=1e-5)


def test_single_query_no_value_bias_matches_reference():
    torch.manual_seed(1)
    m = _randomise(QnAAttention(12, 3, window=3, num_queries=1, qkv_bias=False), seed=3)
    x = torch.randn(1, 16, 12)
    torch.testing.assert_close(m(x, TokenLayout(grid=(4, 4))).double(), reference_qna(m, x, (4, 4)),
                               rtol=1e-4, atol=1e-5)


def test_output_is_local():
    """A token outside every window of position p does not reach p (unlike global attention)."""
    torch.manual_seed(0)
    m = _randomise(QnAAttention(8, 2, window=3))
    layout = TokenLayout(grid=(5, 5))
    x = torch.randn(1, 25, 8)
    x2 = x.clone()
    x2[0, 24] += 5.0                                    # corner (4, 4)
    diff = (m(x2, layout) - m(x, layout)).abs().sum(-1)[0].view(5, 5)
    # Outside the corner's 3x3 neighbourhood only rounding differs (the shared max moved).
    assert diff[:3].max() < 1e-5 and diff[:, :3].max() < 1e-5
    assert diff[3:, 3:].min() > 1e-3


def test_shapes_gradients_and_param_count():
    torch.manual_seed(0)
    c, h, k, lq = 16, 4, 5, 2
    m = QnAAttention(c, h, window=k, num_queries=lq)
    x = torch.randn(3, 12, c, requires_grad=True)
    out = m(x, TokenLayout(grid=(3, 4)))
    assert out.shape == (3, 12, c)
    out.square().sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name
    assert x.grad is not None and x.grad.abs().sum() > 0
    n_params = sum(p.numel() for p in m.parameters())
    assert n_params == 3 * c * c + 2 * c + lq * c + 2 * lq * h * k * k


def test_large_inputs_bf16_autocast_finite():
    torch.manual_seed(0)
    m = _randomise(QnAAttention(16, 4, window=3))
    x = torch.randn(2, 36, 16) * 1e4
    layout = TokenLayout(grid=(6, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(x, layout)
    assert torch.isfinite(out).all()
    out.float().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters())
    # Plain float32 with large inputs as well.
    assert torch.isfinite(m(x, layout)).all()


def test_bf16_autocast_close_to_float32():
    torch.manual_seed(0)
    m = _randomise(QnAAttention(16, 4, window=5))
    x = torch.randn(2, 30, 16)
    layout = TokenLayout(grid=(5, 6))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = m(x, layout)
    assert low.dtype == torch.bfloat16
    torch.testing.assert_close(low.float(), m(x, layout), rtol=0.05, atol=0.05)


def test_large_inputs_float32_still_exact_where_no_window_underflows():
    """The max subtraction cancels: scaling up keys keeps matching the reference (no overflow)."""
    torch.manual_seed(0)
    m = _randomise(QnAAttention(8, 2, window=3))
    with torch.no_grad():
        m.key.weight.mul_(10.0)               # scores of order 10-20: raw exp would still be fine,
        m.rel_bias.mul_(5.0)                  # but this checks the shifted path end to end
    x = torch.randn(1, 16, 8)
    torch.testing.assert_close(m(x, TokenLayout(grid=(4, 4))).double(), reference_qna(m, x, (4, 4)),
                               rtol=1e-4, atol=1e-5)


def _saved_bytes(m: QnAAttention, x: torch.Tensor, layout: TokenLayout) -> int:
    seen, total = set(), 0

    def pack(t):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.dtype)
        if key not in seen:
            seen.add(key)
            total += t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        m(x, layout)
    return total


def _allocated_bytes(m: QnAAttention, x: torch.Tensor, layout: TokenLayout) -> int:
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Tracker(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for t in tree_flatten(out)[0]:
                if isinstance(t, torch.Tensor):
                    Tracker.total += t.numel() * t.element_size()
            return out

    with Tracker():
        m(x, layout).sum().backward()
    return Tracker.total


def test_memory_does_not_grow_with_window():
    layout = TokenLayout(grid=(14, 14))
    x = torch.randn(2, 196, 32, requires_grad=True)
    saved, alloc = {}, {}
    for k in (3, 7):
        torch.manual_seed(0)
        m = QnAAttention(32, 4, window=k)
        saved[k] = _saved_bytes(m, x, layout)
        alloc[k] = _allocated_bytes(m, x, layout)
    assert saved[7] <= 1.2 * saved[3], saved
    assert alloc[7] <= 1.2 * alloc[3], alloc
    # An unfold-based layer would hold k^2 copies of the values: (49 / 9) x as much for the largest term.
    assert saved[3] < 2 * 49 * 196 * 32 * 4 * 2


def test_macs_match_flop_counter():
    torch.manual_seed(0)
    m = QnAAttention(16, 4, window=5, num_queries=2)
    layout = TokenLayout(grid=(4, 6))
    x = torch.randn(1, 24, 16)
    with FlopCounterMode(display=False) as fc:
        m(x, layout)
    # The counter sees matrix products and convolutions (2 flops per multiply-add); the element-wise
    # exp(s) * v products are in the analytic count only.
    lq, n, c = 2, 24, 16
    assert fc.get_total_flops() == 2 * (m.macs(layout) - lq * n * c)


def test_class_token_and_rotary_refused():
    m = QnAAttention(8, 2, window=3)
    with pytest.raises(ValueError, match="class token"):
        m(torch.randn(1, 10, 8), TokenLayout(grid=(3, 3), num_prefix_tokens=1))
    with pytest.raises(ValueError):
        QnAAttention(8, 2, window=4)


def test_reset_parameters_extra_survives_model_init():
    model = build_model(Architecture(attention="qna", qna_window=3, pos_encoding="learned"), img_size=16, in_chans=1)
    attn = model.blocks[0].attn
    assert isinstance(attn, QnAAttention)
    assert torch.all(attn.rel_bias == 0)
    std = attn.query.std().item()
    assert 0.5 * attn.head_dim ** -0.5 < std < 1.5 * attn.head_dim ** -0.5


def test_builds_in_full_model_forward_backward():
    torch.manual_seed(0)
    model = build_model(Architecture(attention="qna", qna_window=3, pos_encoding="learned"), img_size=16, in_chans=1)
    x = torch.randn(2, 1, 16, 16)
    out = model(x)
    assert out.shape == (2, 10) and torch.isfinite(out).all()
    out.sum().backward()
    assert model.blocks[0].attn.query.grad is not None
