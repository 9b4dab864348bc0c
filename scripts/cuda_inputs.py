#!/usr/bin/env python3
"""The inputs of CI's `cuda` type-check, hashed: CI re-runs the check only when they change.

The check (`DOCS_RS=1 cargo check -p nestednet-train --lib --features cuda`) compiles the whole
cubecl-cuda stack to type-check the one place our code names cuda (`Backend`'s cuda arm). Its
result depends only on:

- the registry packages of Cargo.lock (Burn, cubecl and everything under them, pinned);
- every line of a workspace Cargo.toml that mentions burn (its version and features);
- every source file of ours that mentions the `cuda` feature.

`python3 scripts/cuda_inputs.py` prints the hash; `--record [WHERE]` writes it to .ci/cuda-checked
(do that after the check passed: scripts/check_cuda.sh runs both).
"""
import hashlib
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
RECORD = ROOT / ".ci" / "cuda-checked"


def registry_packages(lock: str) -> list[str]:
    blocks = lock.split("\n[[package]]\n")[1:]
    return sorted(b.strip() for b in blocks if "\nsource = " in b)


def inputs() -> list[tuple[str, str]]:
    out = [("Cargo.lock", "\n\n".join(registry_packages((ROOT / "Cargo.lock").read_text())))]
    manifests = [ROOT / "Cargo.toml", *sorted(ROOT.glob("crates/*/Cargo.toml")), *sorted(ROOT.glob("tests/*/Cargo.toml"))]
    for manifest in manifests:
        lines = [line for line in manifest.read_text().splitlines() if "burn" in line]
        out.append((str(manifest.relative_to(ROOT)), "\n".join(lines)))
    for source in sorted([*ROOT.glob("crates/*/src/**/*.rs"), *ROOT.glob("src/**/*.rs")]):
        text = source.read_text()
        if 'feature = "cuda"' in text:
            out.append((str(source.relative_to(ROOT)), text))
    return out


def digest() -> str:
    h = hashlib.sha256()
    for name, text in inputs():
        h.update(f"{name}\n{len(text)}\n{text}\n".encode())
    return h.hexdigest()


if __name__ == "__main__":
    value = digest()
    if sys.argv[1:2] == ["--record"]:
        # The hash, then where the check passed (the second argument, or "locally").
        where = sys.argv[2] if len(sys.argv) > 2 else "locally"
        RECORD.write_text(f"{value}\n# the cuda type-check passed on these inputs: {where}\n")
    elif sys.argv[1:] == ["--list"]:
        print("\n".join(name for name, _ in inputs()))
    elif sys.argv[1:]:
        sys.exit(f"usage: {sys.argv[0]} [--record [WHERE] | --list]")
    print(value)
