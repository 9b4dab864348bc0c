#!/usr/bin/env python3
"""Load a level exported by `nestednet export --format safetensors` into plain PyTorch.

The file holds PyTorch names and layouts (see docs/EXPORT.md), so `load_state_dict(strict=True)`
accepts it as is. The model is rebuilt from the configuration stored in the file's metadata,
evaluated on the MNIST test images, and the accuracy printed.

    python3 scripts/load_exported.py core.safetensors --data-dir data/mnist10k
"""
import argparse
import json
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from torch_mnist_cnn import load  # noqa: E402  (same idx reader and normalisation)


class MnistCnn(nn.Module):
    """A plain mnist-cnn: what one exported level is."""

    def __init__(self, in_channels, height, width, conv1_channels, conv2_channels, hidden, num_classes):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, conv1_channels, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(conv1_channels)
        self.conv2 = nn.Conv2d(conv1_channels, conv2_channels, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(conv2_channels)
        self.fc1 = nn.Linear(conv2_channels * (height // 4) * (width // 4), hidden)
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.bn1(self.conv1(x)), 2))
        x = F.relu(F.max_pool2d(self.bn2(self.conv2(x)), 2)).flatten(1)
        return self.fc2(F.relu(self.fc1(x)))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("file")
    p.add_argument("--data-dir", default="data/mnist10k")
    a = p.parse_args()
    with safe_open(a.file, framework="pt") as f:
        meta = f.metadata()
    config = json.loads(meta["nestednet.config"])
    model = MnistCnn(**config)
    model.load_state_dict(load_file(a.file), strict=True)
    model.eval()
    x, y = load(a.data_dir, "t10k")
    with torch.no_grad():
        pred = torch.cat([model(x[i : i + 500]).argmax(1) for i in range(0, len(x), 500)])
    params = sum(p.numel() for p in model.parameters())
    print(json.dumps({
        "file": a.file,
        "level": int(meta["nestednet.level"]),
        "config": config,
        "params": params,
        "accuracy": (pred == y).float().mean().item(),
    }))


if __name__ == "__main__":
    main()
