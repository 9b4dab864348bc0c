#!/usr/bin/env python3
"""Load a level exported by `nestednet export` (safetensors) into plain PyTorch.

The file holds PyTorch names and layouts (see docs/EXPORT.md), so `load_state_dict(strict=True)`
takes it as is. The network is rebuilt from the tensors' names and shapes alone:

- `mnist-cnn`: `conv1`, `bn1`, `conv2`, `bn2`, `fc1`, `fc2` (the input size comes from the
  file's `nestednet.export` metadata);
- residual networks, with torchvision's names: `conv1` (3x3 stride 1, or 7x7 stride 2 with a
  3x3 max-pool: ImageNet stem), `bn1` (post-activation networks), `layer{s}.{b}.{conv1,bn1,
  conv2,bn2}`, `layer{s}.{b}.downsample.{0,1}` (projection shortcuts; without them a block that
  changes shape uses option A: subsample and zero-pad), `final_bn` (pre-activation networks),
  `fc`. A ResNet-18 level at the standard widths also loads into `torchvision.models.resnet18`
  when torchvision is installed (`--torchvision`);
- transformers (`vit-*`, `text-*`, `lm-*`): pre-norm blocks `transformer.blocks.{i}` of
  `norm_attention`, `attention.{query,key,value,output}`, `norm_feed_forward` and
  `feed_forward.{inner,outer}` (GELU), a final `norm` and the classifier `head.shared`; the ViT
  adds `patch_embedding` (a convolution with kernel = stride = patch), `class_token` and
  `positions`; the text models put `embedding`, `positions`, `transformer` and `norm` under
  `body.`. The head size comes from the metadata; heads = query rows / head size. The language
  model attends causally and gives every position's logits; the text classifier masks the
  padding id 256 and averages the real tokens' features.

    python3 scripts/load_exported.py core.safetensors --data-dir data/mnist10k   # accuracy
    python3 scripts/load_exported.py level.safetensors --check expected.safetensors
      # expected.safetensors: `images` and nestednet's `logits` for them; exits 1 if they differ
    python3 scripts/load_exported.py level.safetensors --logits images.safetensors
      # PyTorch's logits for `images`, as JSON (the backend tests' stored reference)
"""
import argparse
import json
import math
import re
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file


class MnistCnn(nn.Module):
    """A plain mnist-cnn: what one exported level of it is."""

    def __init__(self, state, input_shape):
        super().__init__()
        c_in, height, width = input_shape
        c1, c2 = state["conv1.weight"].shape[0], state["conv2.weight"].shape[0]
        hidden, classes = state["fc1.weight"].shape[0], state["fc2.weight"].shape[0]
        self.conv1 = nn.Conv2d(c_in, c1, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(c1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(c2)
        self.fc1 = nn.Linear(c2 * (height // 4) * (width // 4), hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.bn1(self.conv1(x)), 2))
        x = F.relu(F.max_pool2d(self.bn2(self.conv2(x)), 2)).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


class Block(nn.Module):
    """A basic residual block, post- or pre-activation, with a projection, option-A or
    identity shortcut."""

    def __init__(self, state, prefix, stride, pre_activation):
        super().__init__()
        w1, w2 = state[prefix + "conv1.weight"], state[prefix + "conv2.weight"]
        c_in, c_out = w1.shape[1], w1.shape[0]
        self.pre_activation, self.stride, self.c_out = pre_activation, stride, c_out
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_in if pre_activation else c_out)
        self.conv2 = nn.Conv2d(c_out, w2.shape[0], 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if prefix + "downsample.0.weight" in state:
            layers = [nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False)]
            if prefix + "downsample.1.weight" in state:
                layers.append(nn.BatchNorm2d(c_out))
            self.downsample = nn.Sequential(*layers)

    def shortcut(self, x, activated):
        if self.downsample is not None:
            return self.downsample(activated if self.pre_activation else x)
        if self.stride != 1 or x.shape[1] != self.c_out:
            # Option A: the first pixel of every stride x stride cell, zero channels added.
            x = x[:, :, :: self.stride, :: self.stride]
            return F.pad(x, (0, 0, 0, 0, 0, self.c_out - x.shape[1]))
        return x

    def forward(self, x):
        if self.pre_activation:
            activated = F.relu(self.bn1(x))
            y = self.conv2(F.relu(self.bn2(self.conv1(activated))))
            return y + self.shortcut(x, activated)
        y = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(y + self.shortcut(x, x))


class ResNet(nn.Module):
    """Any residual level nestednet exports: stem, stages of basic blocks, classifier."""

    def __init__(self, state):
        super().__init__()
        stem = state["conv1.weight"]
        self.imagenet = stem.shape[-1] == 7
        self.conv1 = nn.Conv2d(stem.shape[1], stem.shape[0], stem.shape[-1], stride=2 if self.imagenet else 1,
                               padding=stem.shape[-1] // 2, bias=False)
        self.bn1 = nn.BatchNorm2d(stem.shape[0]) if "bn1.weight" in state else None
        self.pre_activation = "final_bn.weight" in state
        blocks = sorted({(int(m[1]), int(m[2])) for m in (re.match(r"layer(\d+)\.(\d+)\.", k) for k in state) if m})
        stages = max(s for s, _ in blocks)
        for s in range(1, stages + 1):
            depth = max(b for t, b in blocks if t == s) + 1
            layer = [Block(state, f"layer{s}.{b}.", 2 if s > 1 and b == 0 else 1, self.pre_activation)
                     for b in range(depth)]
            setattr(self, f"layer{s}", nn.Sequential(*layer))
        self.stages = stages
        self.final_bn = nn.BatchNorm2d(state["final_bn.weight"].shape[0]) if self.pre_activation else None
        self.fc = nn.Linear(state["fc.weight"].shape[1], state["fc.weight"].shape[0])

    def forward(self, x):
        x = self.conv1(x)
        if self.bn1 is not None:
            x = F.relu(self.bn1(x))
        if self.imagenet:
            x = F.max_pool2d(x, 3, stride=2, padding=1)
        for s in range(1, self.stages + 1):
            x = getattr(self, f"layer{s}")(x)
        if self.final_bn is not None:
            x = F.relu(self.final_bn(x))
        return self.fc(x.mean(dim=(2, 3)))


# The score a masked attention position gets before the softmax (Burn's, and nestednet's).
MASKED_SCORE = -1.0e4
# The id that pads a text classifier's short window (the byte tokenizer's separator).
PAD_TOKEN = 256


class Attention(nn.Module):
    """Multi-head attention with separate query, key, value and output projections."""

    def __init__(self, state, prefix, d_head):
        super().__init__()
        inner, width = state[prefix + "query.weight"].shape
        self.query, self.key, self.value = (nn.Linear(width, inner) for _ in range(3))
        self.output = nn.Linear(inner, width)
        self.d_head = d_head

    def forward(self, x, pad=None, causal=False):
        b, n, _ = x.shape
        split = lambda t: t.reshape(b, n, -1, self.d_head).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.d_head)
        if pad is not None:
            scores = scores.masked_fill(pad[:, None, None, :], MASKED_SCORE)
        if causal:
            later = torch.ones(n, n, dtype=torch.bool).triu(1)
            scores = scores.masked_fill(later, MASKED_SCORE)
        context = scores.softmax(-1) @ v
        return self.output(context.transpose(1, 2).reshape(b, n, -1))


class FeedForward(nn.Module):
    def __init__(self, state, prefix):
        super().__init__()
        hidden, width = state[prefix + "inner.weight"].shape
        self.inner, self.outer = nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x):
        return self.outer(F.gelu(self.inner(x)))


class TransformerBlock(nn.Module):
    """A pre-norm block: x + attention(norm(x)), then x + feed_forward(norm(x))."""

    def __init__(self, state, prefix, d_head):
        super().__init__()
        width = state[prefix + "norm_attention.weight"].shape[0]
        self.norm_attention, self.norm_feed_forward = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attention = Attention(state, prefix + "attention.", d_head)
        self.feed_forward = FeedForward(state, prefix + "feed_forward.")

    def forward(self, x, pad=None, causal=False):
        x = x + self.attention(self.norm_attention(x), pad, causal)
        return x + self.feed_forward(self.norm_feed_forward(x))


class Stack(nn.Module):
    """`transformer.blocks.{i}`."""

    def __init__(self, state, prefix, d_head):
        super().__init__()
        depth = 1 + max(int(m[1]) for m in (re.match(re.escape(prefix) + r"blocks\.(\d+)\.", k) for k in state) if m)
        self.blocks = nn.ModuleList(TransformerBlock(state, f"{prefix}blocks.{i}.", d_head) for i in range(depth))

    def forward(self, x, pad=None, causal=False):
        for block in self.blocks:
            x = block(x, pad, causal)
        return x


class Head(nn.Module):
    """`head.shared`: the classifier every level shares."""

    def __init__(self, state):
        super().__init__()
        classes, width = state["head.shared.weight"].shape
        self.shared = nn.Linear(width, classes)

    def forward(self, x):
        return self.shared(x)


class Vit(nn.Module):
    """A ViT level: patches (images zero-padded to a multiple of the patch), a class token,
    learned positions, the blocks, a final norm and the classifier on the class token."""

    def __init__(self, state, config):
        super().__init__()
        width, channels, patch, _ = state["patch_embedding.weight"].shape
        self.patch = patch
        self.patch_embedding = nn.Conv2d(channels, width, patch, stride=patch,
                                         bias="patch_embedding.bias" in state)
        self.class_token = nn.Embedding(1, width)
        self.positions = nn.Embedding(state["positions.weight"].shape[0], width)
        self.transformer = Stack(state, "transformer.", config["d_model"] // config["n_heads"])
        self.norm = nn.LayerNorm(width)
        self.head = Head(state)

    def forward(self, x):
        h, w = x.shape[-2:]
        x = F.pad(x, (0, -w % self.patch, 0, -h % self.patch))
        x = self.patch_embedding(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.weight.expand(x.shape[0], 1, -1), x], 1)
        x = self.transformer(x + self.positions.weight[: x.shape[1]])
        return self.head(self.norm(x)[:, 0])


class TextBody(nn.Module):
    def __init__(self, state, config):
        super().__init__()
        vocabulary, width = state["body.embedding.weight"].shape
        self.embedding = nn.Embedding(vocabulary, width)
        self.positions = nn.Embedding(state["body.positions.weight"].shape[0], width)
        self.transformer = Stack(state, "body.transformer.", config["d_model"] // config["n_heads"])
        self.norm = nn.LayerNorm(width)


class TextModel(nn.Module):
    """A text level: token embedding plus learned positions, the blocks, a final norm; the
    language model's head on every position, the classifier's on the mean of the real tokens."""

    def __init__(self, state, config, causal):
        super().__init__()
        self.body, self.head, self.causal = TextBody(state, config["body"]), Head(state), causal

    def forward(self, tokens):
        n = tokens.shape[1]
        x = self.body.embedding(tokens) + self.body.positions.weight[:n]
        pad = None if self.causal else tokens == PAD_TOKEN
        x = self.body.norm(self.body.transformer(x, pad, self.causal))
        if self.causal:
            return self.head(x)
        real = (~pad).float().unsqueeze(-1)
        return self.head((x * real).sum(1) / real.sum(1).clamp(min=1.0))


def build(path):
    """The PyTorch module of an exported level, its weights loaded with strict=True."""
    state = load_file(path)
    with safe_open(path, framework="pt") as f:
        meta = f.metadata()
    manifest = json.loads(meta["nestednet.export"])
    if "patch_embedding.weight" in state:
        model = Vit(state, manifest["model"])
    elif "body.embedding.weight" in state:
        model = TextModel(state, manifest["model"], meta["nestednet.model"].startswith("lm"))
    elif "fc.weight" in state:
        model = ResNet(state)
    else:
        model = MnistCnn(state, manifest["input_shape"])
    model.load_state_dict(state, strict=True)
    return model.eval(), manifest, state


def torchvision_resnet18(state):
    """The level in torchvision's own ResNet-18 (standard widths only)."""
    import torchvision

    classes, c_in = state["fc.weight"].shape[0], state["conv1.weight"].shape[1]
    model = torchvision.models.resnet18(num_classes=classes)
    if c_in != 3:
        model.conv1 = nn.Conv2d(c_in, 64, 7, stride=2, padding=3, bias=False)
    model.load_state_dict(state, strict=True)
    return model.eval()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("file")
    p.add_argument("--data-dir", default="data/mnist10k")
    p.add_argument("--check", help="safetensors file with `images` (or `tokens`) and nestednet's `logits`")
    p.add_argument("--tolerance", type=float, default=1e-4)
    p.add_argument("--torchvision", action="store_true", help="also load into torchvision's resnet18")
    p.add_argument("--logits", help="safetensors file with `images`: print PyTorch's logits for them as JSON")
    a = p.parse_args()
    model, manifest, state = build(a.file)
    if a.logits:
        with torch.no_grad():
            logits = model(load_file(a.logits)["images"])
        print(json.dumps({"file": a.file, "logits": logits.tolist()}))
        return
    models = {"rebuilt": model}
    if a.torchvision:
        models["torchvision.resnet18"] = torchvision_resnet18(state)
    if a.check:
        expected = load_file(a.check)
        worst = 0.0
        with torch.no_grad():
            for name, m in models.items():
                inputs = expected["images"] if "images" in expected else expected["tokens"]
                # nestednet's rows: one per target (a language model's, one per position).
                diff = (m(inputs).reshape(expected["logits"].shape) - expected["logits"]).abs().max().item()
                print(json.dumps({"file": a.file, "module": name, "max_abs_diff": diff}))
                worst = max(worst, diff)
        sys.exit(0 if worst <= a.tolerance else 1)
    sys.path.insert(0, __file__.rsplit("/", 1)[0])
    from torch_mnist_cnn import load  # same idx reader and normalisation

    x, y = load(a.data_dir, "t10k")
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)])
    print(json.dumps({
        "file": a.file,
        "level": manifest["level"],
        "name": manifest["level_name"],
        "params": sum(p.numel() for p in model.parameters()),
        "accuracy": (pred == y).float().mean().item(),
    }))


if __name__ == "__main__":
    main()
