#!/usr/bin/env python3
"""Writes the UCI 8x8 handwritten digits as MNIST-style idx files (data/digits8x8/).

Source: the copy of the UCI "Optical Recognition of Handwritten Digits" test set that
scikit-learn ships (sklearn/datasets/data/digits.csv.gz: 1,797 rows of 64 pixels in 0..16 and
a label). Pixels are scaled to 0..255 (round(v * 255 / 16)); the rows are shuffled with a fixed
seed and split 1,437 / 360 (80% / 20%).

    pip download scikit-learn --no-deps -d /tmp/skl
    unzip -o /tmp/skl/scikit_learn-*.whl 'sklearn/datasets/data/digits.csv.gz' -d /tmp/skl
    python3 scripts/make_digits8x8.py /tmp/skl/sklearn/datasets/data/digits.csv.gz data/digits8x8
"""
import gzip
import random
import struct
import sys
from pathlib import Path


def write_idx(path, magic, dims, data):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims)
    # mtime=0: the same input gives byte-identical files.
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(header + bytes(data))


def main(csv_path, out_dir):
    rows = [line.split(",") for line in gzip.open(csv_path, "rt").read().split("\n") if line.strip()]
    assert len(rows) == 1797 and all(len(r) == 65 for r in rows)
    random.Random(0).shuffle(rows)
    train, test = rows[:1437], rows[1437:]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for prefix, split in (("train", train), ("t10k", test)):
        pixels = [round(int(v) * 255 / 16) for r in split for v in r[:64]]
        labels = [int(r[64]) for r in split]
        write_idx(out / f"{prefix}-images-idx3-ubyte.gz", 0x803, [len(split), 8, 8], pixels)
        write_idx(out / f"{prefix}-labels-idx1-ubyte.gz", 0x801, [len(split)], labels)
    print(f"{len(train)} training and {len(test)} test digits of 8x8 in {out}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
