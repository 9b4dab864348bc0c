#!/usr/bin/env python3
"""The PyTorch peer of `cargo bench --bench transformers`: the same nested transformers in plain
PyTorch 2.9 on the CPU, timed the same way (median seconds of a joint training step after 3
warm-up steps: every level's cross-entropy, their mean, one Adam 1e-3 step).

One set of full-size weights; level k uses the leading block of every tensor: its heads
(head size fixed), feed-forward units and model width (ratios 0.25, 0.5, 1), as nestednet's
`lm-tiny` and `vit-tiny` do. Attention is `F.scaled_dot_product_attention` (causal for the
language model), what a PyTorch user would write. Inputs are random tokens and images of the
benchmark's shapes: the step time does not depend on their values.

    python3 scripts/torch_transformers.py --model lm --threads 2 --steps 30
    python3 scripts/torch_transformers.py --model vit --threads 2 --steps 30

prints one line of JSON: {"model", "batch", "step_s", "threads"}.
"""
import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

RATIOS = (0.25, 0.5, 1.0)


class NestedBlock(nn.Module):
    """A pre-norm transformer block whose level uses the leading heads, units and width."""

    def __init__(self, d_model, n_heads, d_ff):
        super().__init__()
        self.d_head = d_model // n_heads
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.q, self.k, self.v, self.o = (nn.Linear(d_model, d_model) for _ in range(4))
        self.inner, self.outer = nn.Linear(d_model, d_ff), nn.Linear(d_ff, d_model)

    def forward(self, x, heads, hidden, causal):
        b, n, w = x.shape
        inner = heads * self.d_head

        def norm(layer, t):
            return F.layer_norm(t, (w,), layer.weight[:w], layer.bias[:w])

        def proj(layer, t):
            return F.linear(t, layer.weight[:inner, :w], layer.bias[:inner]).view(b, n, heads, self.d_head).transpose(1, 2)

        h = norm(self.norm1, x)
        ctx = F.scaled_dot_product_attention(proj(self.q, h), proj(self.k, h), proj(self.v, h), is_causal=causal)
        ctx = ctx.transpose(1, 2).reshape(b, n, inner)
        x = x + F.linear(ctx, self.o.weight[:w, :inner], self.o.bias[:w])
        h = F.gelu(F.linear(norm(self.norm2, x), self.inner.weight[:hidden, :w], self.inner.bias[:hidden]))
        return x + F.linear(h, self.outer.weight[:w, :hidden], self.outer.bias[:w])


class NestedTransformer(nn.Module):
    """Token (or patch) embedding, learned positions, blocks, final norm and classifier."""

    def __init__(self, d_model=64, n_heads=4, d_ff=256, n_blocks=4, positions=128, classes=257,
                 vocabulary=None, patch=None, channels=1):
        super().__init__()
        self.n_heads, self.d_ff, self.d_model = n_heads, d_ff, d_model
        self.embedding = nn.Embedding(vocabulary, d_model) if vocabulary else None
        self.patch = nn.Conv2d(channels, d_model, patch, stride=patch) if patch else None
        self.class_token = nn.Parameter(torch.randn(1, 1, d_model) * 0.02) if patch else None
        self.positions = nn.Parameter(torch.randn(positions, d_model) * 0.02)
        self.blocks = nn.ModuleList(NestedBlock(d_model, n_heads, d_ff) for _ in range(n_blocks))
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, classes)

    def forward(self, x, ratio):
        heads = round(self.n_heads * ratio)
        w, hidden = heads * (self.d_model // self.n_heads), round(self.d_ff * ratio)
        if self.embedding is not None:
            x = F.embedding(x, self.embedding.weight[:, :w])
        else:
            x = F.conv2d(x, self.patch.weight[:w], self.patch.bias[:w], stride=self.patch.stride)
            x = torch.cat([self.class_token[..., :w].expand(x.shape[0], 1, w), x.flatten(2).transpose(1, 2)], 1)
        x = x + self.positions[: x.shape[1], :w]
        causal = self.embedding is not None
        for block in self.blocks:
            x = block(x, heads, hidden, causal)
        x = F.layer_norm(x, (w,), self.norm.weight[:w], self.norm.bias[:w])
        if not causal:
            x = x[:, 0]
        return F.linear(x, self.head.weight[:, :w], self.head.bias)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model", choices=["lm", "vit"], required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=30)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    if a.model == "lm":
        batch, model = 32, NestedTransformer(positions=128, classes=257, vocabulary=257)
        make = lambda: (torch.randint(0, 257, (batch, 128)), torch.randint(0, 257, (batch * 128,)))
    else:
        batch, model = 64, NestedTransformer(positions=50, classes=10, patch=4)
        make = lambda: (torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,)))
    optim = torch.optim.Adam(model.parameters(), lr=1e-3)
    times = []
    for i in range(a.steps + 3):
        x, y = make()
        start = time.perf_counter()
        losses = [F.cross_entropy(model(x, r).reshape(-1, model.head.out_features), y) for r in RATIOS]
        loss = torch.stack(losses).mean()
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    times.sort()
    print(json.dumps({"model": a.model, "batch": batch, "step_s": times[len(times) // 2], "threads": a.threads}))


if __name__ == "__main__":
    main()
