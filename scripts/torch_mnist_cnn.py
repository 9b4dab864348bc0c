#!/usr/bin/env python3
"""PyTorch reference for nestednet's `mnist-cnn`: the same nested model and recipe.

conv3x3(32)-BN-ReLU-maxpool2 -> conv3x3(64)-BN-ReLU-maxpool2 -> linear(128)-ReLU -> linear(10),
levels at width ratios (default 0.25/0.5/1.0) that use the leading channels of one shared weight
tensor per layer and a private BatchNorm per level, trained jointly with the mean of the level
cross-entropies (NestedNet Eq. 5), Adam 1e-3, batch 64, on the same idx files.

Prints one JSON line: seconds per training epoch (data + forward + backward + step, no
evaluation), and the test accuracy of every level. With `--latency`, also the inference latency
of every level (median ms at batch 1, 64 and 256) on a compact copy of the level's weights,
as nestednet's `extract_level` serves it.

    python3 scripts/torch_mnist_cnn.py --data-dir data/mnist10k --threads 2
    python3 scripts/torch_mnist_cnn.py --ratios 1.0 --width 0.25   # one network of width 0.25
    python3 scripts/torch_mnist_cnn.py --epochs 1 --latency         # + latency per level
"""
import argparse
import gzip
import json
import struct
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    magic = struct.unpack(">I", data[:4])[0]
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    return np.frombuffer(data[4 + 4 * ndim :], dtype=np.uint8).reshape(dims)


def load(data_dir, split):
    images = read_idx(f"{data_dir}/{split}-images-idx3-ubyte.gz").astype(np.float32) / 255.0
    labels = read_idx(f"{data_dir}/{split}-labels-idx1-ubyte.gz").astype(np.int64)
    images = (images - 0.1307) / 0.3081
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)


class NestedMnistCnn(nn.Module):
    def __init__(self, ratios, conv1=32, conv2=64, hidden=128, classes=10):
        super().__init__()
        self.widths = [tuple(int(r * c + 0.5) for c in (conv1, conv2, hidden)) for r in ratios]
        self.conv1 = nn.Conv2d(1, conv1, 3, padding=1)
        self.conv2 = nn.Conv2d(conv1, conv2, 3, padding=1)
        self.bn1 = nn.ModuleList([nn.BatchNorm2d(w[0]) for w in self.widths])
        self.bn2 = nn.ModuleList([nn.BatchNorm2d(w[1]) for w in self.widths])
        self.fc1 = nn.Linear(conv2 * 49, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward_level(self, x, k):
        c1, c2, h = self.widths[k]
        x = F.conv2d(x, self.conv1.weight[:c1], self.conv1.bias[:c1], padding=1)
        x = F.max_pool2d(F.relu(self.bn1[k](x)), 2)
        x = F.conv2d(x, self.conv2.weight[:c2, :c1], self.conv2.bias[:c2], padding=1)
        x = F.max_pool2d(F.relu(self.bn2[k](x)), 2).flatten(1)
        x = F.relu(F.linear(x, self.fc1.weight[:h, : c2 * 49], self.fc1.bias[:h]))
        return F.linear(x, self.fc2.weight[:, :h], self.fc2.bias)

    def compact_level(self, k):
        """Level k as a standalone function on contiguous copies of its weights (eval mode)."""
        c1, c2, h = self.widths[k]
        copy = lambda t: t.detach().clone().contiguous()
        w1, b1 = copy(self.conv1.weight[:c1]), copy(self.conv1.bias[:c1])
        w2, b2 = copy(self.conv2.weight[:c2, :c1]), copy(self.conv2.bias[:c2])
        f1, g1 = copy(self.fc1.weight[:h, : c2 * 49]), copy(self.fc1.bias[:h])
        f2, g2 = copy(self.fc2.weight[:, :h]), copy(self.fc2.bias)
        bn1, bn2 = self.bn1[k].eval(), self.bn2[k].eval()

        def forward(x):
            x = F.max_pool2d(F.relu(bn1(F.conv2d(x, w1, b1, padding=1))), 2)
            x = F.max_pool2d(F.relu(bn2(F.conv2d(x, w2, b2, padding=1))), 2).flatten(1)
            return F.linear(F.relu(F.linear(x, f1, g1)), f2, g2)

        return forward


def median_latency_ms(forward, batch, runs=25):
    x = torch.randn(batch, 1, 28, 28)
    with torch.no_grad():
        for _ in range(3):
            forward(x)
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            forward(x)
            times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data-dir", default="data/mnist10k")
    p.add_argument("--ratios", default="0.25,0.5,1.0")
    p.add_argument("--width", type=float, default=1.0, help="scale of the full network")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--latency", action="store_true", help="also time inference per level")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    ratios = [float(r) for r in a.ratios.split(",")]
    w = a.width
    model = NestedMnistCnn(ratios, int(32 * w + 0.5), int(64 * w + 0.5), int(128 * w + 0.5))
    x_train, y_train = load(a.data_dir, "train")
    x_test, y_test = load(a.data_dir, "t10k")
    opt = torch.optim.Adam(model.parameters(), lr=a.lr)
    gen = torch.Generator().manual_seed(a.seed)
    epoch_seconds = []
    for _ in range(a.epochs):
        model.train()
        start = time.perf_counter()
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), a.batch_size):
            idx = order[i : i + a.batch_size]
            xb, yb = x_train[idx], y_train[idx]
            loss = sum(F.cross_entropy(model.forward_level(xb, k), yb) for k in range(len(ratios))) / len(ratios)
            opt.zero_grad()
            loss.backward()
            opt.step()
        epoch_seconds.append(time.perf_counter() - start)
    model.eval()
    acc = []
    with torch.no_grad():
        for k in range(len(ratios)):
            pred = torch.cat([model.forward_level(x_test[i : i + 500], k).argmax(1) for i in range(0, len(x_test), 500)])
            acc.append((pred == y_test).float().mean().item())
    out = {
        "framework": f"pytorch {torch.__version__}",
        "threads": a.threads,
        "seconds_per_epoch": sum(epoch_seconds) / len(epoch_seconds),
        "epoch_seconds": epoch_seconds,
        "accuracy": acc,
    }
    if a.latency:
        batches = [1, 64, 256]
        out["latency_batches"] = batches
        out["latency_ms"] = [[median_latency_ms(model.compact_level(k), b) for b in batches] for k in range(len(ratios))]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
