"""Small transformer blocks in plain torch, for head-folding tests: MHA (separate or fused QKV),
grouped-query attention, optional rotary embeddings, pre-norm residual blocks.

``duplicate_heads`` builds the exact-duplicate oracle for attention: every head of the wide
model is a copy of a compact head (q/k/v head rows copied, the output projection's input columns
of the head halved), and every MLP neuron likewise (fc1 rows and bias copied, fc2 columns halved).
"""

from __future__ import annotations

import math

import torch
from torch import nn


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


class Attention(nn.Module):
    """Multi-head attention; ``kv_heads < heads`` gives grouped-query attention."""

    def __init__(
        self,
        hidden: int,
        heads: int,
        head_dim: int,
        kv_heads: int | None = None,
        fused: bool = False,
        rope: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.kv_heads = kv_heads or heads
        self.fused, self.rope = fused, rope
        q_out, kv_out = heads * head_dim, self.kv_heads * head_dim
        if fused:
            self.qkv = nn.Linear(hidden, q_out + 2 * kv_out, bias=bias)
        else:
            self.q_proj = nn.Linear(hidden, q_out, bias=bias)
            self.k_proj = nn.Linear(hidden, kv_out, bias=bias)
            self.v_proj = nn.Linear(hidden, kv_out, bias=bias)
        self.o_proj = nn.Linear(q_out, hidden, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, _ = x.shape
        if self.fused:
            q, k, v = self.qkv(x).split(
                [self.heads * self.head_dim] + [self.kv_heads * self.head_dim] * 2, dim=-1
            )
        else:
            q, k, v = self.q_proj(x), self.k_proj(x), self.v_proj(x)
        q = q.reshape(b, s, self.heads, self.head_dim).transpose(1, 2)
        k = k.reshape(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        v = v.reshape(b, s, self.kv_heads, self.head_dim).transpose(1, 2)
        if self.rope:
            pos = torch.arange(s, dtype=torch.float32)
            inv = 1.0 / (10000 ** (torch.arange(0, self.head_dim, 2, dtype=torch.float32) / self.head_dim))
            ang = torch.cat([pos[:, None] * inv[None], pos[:, None] * inv[None]], dim=-1)
            cos, sin = ang.cos(), ang.sin()
            q = q * cos + rotate_half(q) * sin
            k = k * cos + rotate_half(k) * sin
        if self.kv_heads != self.heads:
            rep = self.heads // self.kv_heads
            k = (
                k[:, :, None]
                .expand(b, self.kv_heads, rep, s, self.head_dim)
                .reshape(b, self.heads, s, self.head_dim)
            )
            v = (
                v[:, :, None]
                .expand(b, self.kv_heads, rep, s, self.head_dim)
                .reshape(b, self.heads, s, self.head_dim)
            )
        att = (q @ k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        att = att.softmax(dim=-1)
        ctx = (att @ v).transpose(1, 2).reshape(b, s, self.heads * self.head_dim)
        return self.o_proj(ctx)


class Block(nn.Module):
    """Pre-norm block: x + attn(LN(x)); x + fc2(GELU(fc1(LN(x))))."""

    def __init__(self, hidden: int, heads: int, head_dim: int, mlp: int, **attn_kwargs) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(hidden)
        self.attn = Attention(hidden, heads, head_dim, **attn_kwargs)
        self.ln2 = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, mlp)
        self.fc2 = nn.Linear(mlp, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.fc2(nn.functional.gelu(self.fc1(self.ln2(x))))


class TinyTransformer(nn.Module):
    """[batch, seq, hidden] → [batch, seq, hidden]: ``depth`` pre-norm blocks and a final LayerNorm."""

    def __init__(
        self,
        hidden: int = 32,
        heads: int = 4,
        head_dim: int = 8,
        mlp: int = 64,
        depth: int = 2,
        **attn_kwargs,
    ) -> None:
        super().__init__()
        self.config = dict(hidden=hidden, heads=heads, head_dim=head_dim, mlp=mlp, depth=depth, **attn_kwargs)
        self.blocks = nn.ModuleList(Block(hidden, heads, head_dim, mlp, **attn_kwargs) for _ in range(depth))
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


def _dup_rows(w: torch.Tensor, unit: int, groups: int) -> torch.Tensor:
    """Repeat each block of ``unit`` rows twice: [g0, g0, g1, g1, …] (axis 0)."""
    blocks = w.reshape(groups, unit, *w.shape[1:])
    return torch.stack([blocks, blocks], dim=1).reshape(groups * 2 * unit, *w.shape[1:])


@torch.no_grad()
def duplicate_heads(compact: TinyTransformer) -> TinyTransformer:
    """The wide model: twice the heads (kv heads) and twice the MLP width, each an exact copy.

    Head h of the wide model copies compact head h // 2; output-projection input columns of each
    copy are halved, so the wide model computes the compact function exactly. For GQA every KV
    head and its query group are duplicated together.
    """
    cfg = dict(compact.config)
    heads, kv, dh = cfg["heads"], cfg.get("kv_heads") or cfg["heads"], cfg["head_dim"]
    wide_cfg = dict(cfg, heads=2 * heads, mlp=2 * cfg["mlp"])
    if cfg.get("kv_heads"):
        wide_cfg["kv_heads"] = 2 * kv
    wide = TinyTransformer(**wide_cfg)
    rep = heads // kv
    for cb, wb in zip(compact.blocks, wide.blocks, strict=True):
        wb.ln1.load_state_dict(cb.ln1.state_dict())
        wb.ln2.load_state_dict(cb.ln2.state_dict())
        ca, wa = cb.attn, wb.attn

        def qrows(t: torch.Tensor) -> torch.Tensor:
            # query heads grouped by kv head: [kv, rep, dh] → duplicate each kv group as a whole
            g = t.reshape(kv, rep * dh, *t.shape[1:])
            return torch.stack([g, g], dim=1).reshape(2 * kv * rep * dh, *t.shape[1:])

        def kvrows(t: torch.Tensor) -> torch.Tensor:
            return _dup_rows(t, dh, kv)

        if ca.fused:
            q_out, kv_out = heads * dh, kv * dh
            w, b = ca.qkv.weight, ca.qkv.bias
            wq, wk, wv = w[:q_out], w[q_out : q_out + kv_out], w[q_out + kv_out :]
            wa.qkv.weight.copy_(torch.cat([qrows(wq), kvrows(wk), kvrows(wv)]))
            if b is not None:
                bq, bk, bv = b[:q_out], b[q_out : q_out + kv_out], b[q_out + kv_out :]
                wa.qkv.bias.copy_(torch.cat([qrows(bq), kvrows(bk), kvrows(bv)]))
        else:
            wa.q_proj.weight.copy_(qrows(ca.q_proj.weight))
            wa.k_proj.weight.copy_(kvrows(ca.k_proj.weight))
            wa.v_proj.weight.copy_(kvrows(ca.v_proj.weight))
            if ca.q_proj.bias is not None:
                wa.q_proj.bias.copy_(qrows(ca.q_proj.bias))
                wa.k_proj.bias.copy_(kvrows(ca.k_proj.bias))
                wa.v_proj.bias.copy_(kvrows(ca.v_proj.bias))
        wa.o_proj.weight.copy_(qrows(ca.o_proj.weight.t()).t() / 2)
        if ca.o_proj.bias is not None:
            wa.o_proj.bias.copy_(ca.o_proj.bias)
        wb.fc1.weight.copy_(_dup_rows(cb.fc1.weight, 1, cfg["mlp"]))
        wb.fc1.bias.copy_(_dup_rows(cb.fc1.bias, 1, cfg["mlp"]))
        wb.fc2.weight.copy_(_dup_rows(cb.fc2.weight.t(), 1, cfg["mlp"]).t() / 2)
        wb.fc2.bias.copy_(cb.fc2.bias)
    wide.norm.load_state_dict(compact.norm.state_dict())
    return wide.eval()
