#!/usr/bin/env python3
"""Structure checks for nestednet's crates, run by CI (`.ci/run`) and by hand:

1. **No import cycle between modules.** Every `crate::…` and `super::…` path of a crate's
   source (its `use` statements and inline paths; `#[cfg(test)]` modules left out) is resolved
   to the module that *defines* the item, following `pub use` re-exports, and the module graph
   must have no cycle (strongly connected components of one module only).
2. **Layers point one way.** In `nestednet-train`, `trainer` (the generic core) uses none of
   `export`, `serve`, `jobs`; `export` uses neither `serve` nor `jobs`; `serve` does not use
   `jobs`.
3. **No long function.** No function of the crates' sources (tests included) spans more than
   100 lines.
4. **Only `jobs` names the built-in models.** Outside their tests, `trainer`, `export` and
   `serve` of `nestednet-train` name no built-in model type (`NestedMnistCnn…`, `MnistCnn…`,
   `NestedResNet…`, `ResNet…`): they are written against `NestedNetwork` alone.

    python3 scripts/check_structure.py            # every crate under crates/, and src/
    python3 scripts/check_structure.py --graph    # also print nestednet-train's module graph

Exits with 1 and names what is wrong otherwise.
"""

import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MAX_FUNCTION_LINES = 100
# (crate, layers in order: a module of a layer may use its own and the earlier layers only)
LAYERS = {"nestednet-train": ["trainer", "export", "serve", "jobs"]}
# (crate, the layers that may name the built-in models outside their tests, the models' types)
BUILT_IN_NAMES = ("nestednet-train", {"jobs"}, re.compile(r"\b(?:Nested)?(?:MnistCnn|ResNet|BasicBlock)\w*"))


def module_files(src: Path):
    """Module path (tuple) -> file, for every module file of a crate."""
    modules = {}
    for path in sorted(src.rglob("*.rs")):
        rel = path.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("lib", "main", "mod"):
            parts = parts[:-1]
        modules[tuple(parts)] = path
    return modules


def strip_tests(text: str) -> str:
    """The source without its `#[cfg(test)]` module (conventionally the file's last item)."""
    m = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod \w+ \{", text, re.M)
    return text[: m.start()] if m else text


def strip_comments_and_strings(text: str) -> str:
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def expand_use(tree: str):
    """Full paths of a `use` tree: `a::{b, c::{d, e as f}}` -> a::b, a::c::d, a::c::e."""
    tree = re.sub(r"\s+as\s+\w+", "", tree)
    tree = re.sub(r"\s+", "", tree)
    out = []

    def walk(prefix, t):
        if t.startswith("{"):
            depth, start, items = 0, 1, []
            for i, ch in enumerate(t):
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    depth -= 1
                    if depth == 0:
                        items.append(t[start:i])
                elif ch == "," and depth == 1:
                    items.append(t[start:i])
                    start = i + 1
            for item in items:
                if item:
                    walk(prefix, item)
            return
        head, sep, rest = t.partition("::")
        if sep and rest:
            walk(prefix + [head], rest)
        else:
            out.append(prefix + [head])

    walk([], tree)
    return out


def references(text: str):
    """Paths starting at `crate` or `super` in `text` (use trees expanded)."""
    refs = []
    for m in re.finditer(r"\buse\s+((?:crate|super|self)::[^;]+);", text):
        refs += expand_use(m.group(1))
    body = re.sub(r"\buse\s+[^;]+;", "", text)
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", body):
        refs.append(m.group(1).split("::"))
    return refs


def reexports(modules):
    """(module, name) -> full path it re-exports (`pub use child::Name;`)."""
    table = {}
    for module, path in modules.items():
        text = strip_comments_and_strings(strip_tests(path.read_text()))
        for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
            for parts in expand_use(m.group(1)):
                table[(module, parts[-1])] = absolute(module, parts)
    return table


def absolute(module, parts):
    """`parts` (relative to `module`) as a path from the crate root."""
    if parts[0] == "crate":
        return parts[1:]
    base = list(module)
    while parts and parts[0] in ("super", "self"):
        if parts[0] == "super":
            base = base[:-1]
        parts = parts[1:]
    if not parts:
        return base
    # A path without `crate`/`super`/`self` inside a module names a child module or an item.
    return base + list(parts)


def resolve(parts, modules, table, depth=0):
    """The module that defines the item at `parts` (a path from the crate root)."""
    for cut in range(len(parts), -1, -1):
        module = tuple(parts[:cut])
        if module in modules:
            rest = parts[cut:]
            if rest and (module, rest[0]) in table and depth < 16:
                target = table[(module, rest[0])]
                if target[: len(module)] != list(module) or len(target) > len(module) + 1:
                    return resolve(target + rest[1:], modules, table, depth + 1)
            return module
    return ()


def module_graph(src: Path):
    modules = module_files(src)
    table = reexports(modules)
    graph = {m: set() for m in modules}
    for module, path in modules.items():
        text = strip_comments_and_strings(strip_tests(path.read_text()))
        for parts in references(text):
            target = resolve(absolute(module, parts), modules, table)
            # The crate root and a parent module declare and re-export their children: those
            # are not uses. Everything else is an edge.
            if module == () or target == module or target[: len(module)] == module:
                continue
            graph[module].add(target)
    return graph


def cycles(graph):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(graph):
        if v not in index:
            visit(v)
    return out


def name(module):
    return "::".join(module) or "crate"


def long_functions(path: Path):
    """(name, first line, length) of every function of `path` longer than the limit."""
    lines = path.read_text().splitlines()
    out = []
    i = 0
    fn = re.compile(r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:const\s+)?(?:async\s+)?(?:unsafe\s+)?fn\s+(\w+)")
    while i < len(lines):
        m = fn.match(lines[i])
        if not m:
            i += 1
            continue
        depth, started, j = 0, False, i
        while j < len(lines):
            code = re.sub(r"//.*", "", re.sub(r"'.'|\"(?:\\.|[^\"\\])*\"", "", lines[j]))
            if not started and code.rstrip().endswith(";") and "{" not in code:
                break  # a declaration without a body
            depth += code.count("{") - code.count("}")
            started |= "{" in code
            if started and depth <= 0:
                break
            j += 1
        if started and j - i + 1 > MAX_FUNCTION_LINES:
            out.append((m.group(1), i + 1, j - i + 1))
        i += 1
    return out


def main():
    failures = []
    crates = sorted(p for p in (ROOT / "crates").iterdir() if (p / "src").is_dir())
    for crate in crates:
        graph = module_graph(crate / "src")
        for comp in cycles(graph):
            failures.append(f"{crate.name}: import cycle between modules {', '.join(map(name, comp))}")
        layers = LAYERS.get(crate.name)
        if layers:
            rank = {layer: i for i, layer in enumerate(layers)}
            for module, targets in graph.items():
                for target in targets:
                    a = rank.get(module[0]) if module else None
                    b = rank.get(target[0]) if target else None
                    if a is not None and b is not None and b > a:
                        failures.append(
                            f"{crate.name}: {name(module)} (layer {layers[a]}) uses {name(target)} (layer {layers[b]}, above it)"
                        )
        if "--graph" in sys.argv and crate.name == "nestednet-train":
            for module in sorted(graph):
                print(f"{name(module)} -> {', '.join(sorted(map(name, graph[module]))) or '-'}")
    crate, allowed, pattern = BUILT_IN_NAMES
    for module, path in module_files(ROOT / "crates" / crate / "src").items():
        if not module or module[0] in allowed:
            continue
        code = strip_comments_and_strings(strip_tests(path.read_text()))
        for m in sorted(set(pattern.findall(code))):
            failures.append(f"{path.relative_to(ROOT)}: names the built-in model type {m} (only jobs may)")
    for path in sorted(ROOT.glob("crates/*/src/**/*.rs")) + sorted(ROOT.glob("src/**/*.rs")):
        for fn, line, length in long_functions(path):
            failures.append(f"{path.relative_to(ROOT)}:{line}: fn {fn} is {length} lines (at most {MAX_FUNCTION_LINES})")
    for f in failures:
        print(f)
    if failures:
        sys.exit(1)
    print(
        f"structure: {len(crates)} crates, no import cycle, layers one way, built-in models named in "
        f"jobs only, no function over {MAX_FUNCTION_LINES} lines"
    )


if __name__ == "__main__":
    main()
