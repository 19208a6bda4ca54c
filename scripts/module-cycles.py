#!/usr/bin/env python3
"""module-cycles.py: lists the import cycles between the modules (files) of each crate.

A module is a file under crates/NAME/src; `use crate::a::b` (and `crate::a::b::` paths in
code) is an arrow from the file to the module `a::b` (or its nearest existing parent). `mod.rs`
re-exporting its children (`pub use child::X`, `mod child`) is not an arrow up. Exit 1 when a
crate has a cycle, printing each. Run by crates/herald-testkit/tests/module_cycles.rs.
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")


def modules(src):
    """Module path (tuple) -> file, for every .rs file under src."""
    out = {}
    for d, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(d, f), src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            out[tuple(rel)] = os.path.join(d, f)
    return out


def strip(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def targets(text):
    """Every crate:: path mentioned (use trees expanded one level)."""
    found = []
    for m in re.finditer(r"\bcrate::([A-Za-z_][A-Za-z0-9_]*(?:::[A-Za-z_][A-Za-z0-9_]*)*)(::\{([^}]*)\})?", text):
        base = m.group(1).split("::")
        if m.group(3):
            for item in m.group(3).split(","):
                item = item.strip().split(" as ")[0].split("::")
                if item and item[0] and item[0] != "self":
                    found.append(base + item)
            found.append(base)
        else:
            found.append(base)
    return found


def resolve(path, mods):
    path = tuple(path)
    while path and path not in mods:
        path = path[:-1]
    return path


def tests_only(text):
    """The text without `#[cfg(test)] mod tests { ... }` blocks."""
    i = text.find("#[cfg(test)]")
    return text if i < 0 else text[:i]


def cycles(crate):
    src = os.path.join(ROOT, "crates", crate, "src")
    mods = modules(src)
    edges = {m: set() for m in mods}
    for m, f in mods.items():
        text = strip(tests_only(open(f, encoding="utf-8").read()))
        # A module's own re-exports of its children (`pub use child::X;`) are arrows down.
        for c in re.finditer(r"\bpub\s+use\s+(?:self::)?([a-z_][a-z0-9_]*)::", text):
            child = m + (c.group(1),)
            if child in mods:
                edges[m].add(child)
        for t in targets(text):
            r = resolve(t, mods)
            # A parent naming its own child (mod.rs re-exports) and the crate root are not
            # arrows; nor is a module naming itself.
            if r == m or r == ():
                continue
            edges[m].add(r)
    found, seen = [], set()
    for start in sorted(edges):
        stack = [(start, [start])]
        while stack:
            node, path = stack.pop()
            for nxt in sorted(edges[node]):
                if nxt == start and len(path) > 1:
                    key = frozenset(path)
                    if key not in seen:
                        seen.add(key)
                        found.append(path + [start])
                elif nxt not in path and len(path) < 6:
                    stack.append((nxt, path + [nxt]))
    return found


def main():
    bad = 0
    for crate in sorted(os.listdir(os.path.join(ROOT, "crates"))):
        if not os.path.isdir(os.path.join(ROOT, "crates", crate, "src")):
            continue
        for c in cycles(crate):
            bad += 1
            print(f"{crate}: " + " -> ".join("::".join(p) or "crate" for p in c))
    print(f"module-cycles: {bad} cycle(s)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
