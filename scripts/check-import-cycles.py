#!/usr/bin/env python3
"""Fails when a Rust crate's files import each other in a circle.

For every `src/` folder given (default: every crate of the workspace), each
file is a module (`a/b.rs` and `a/b/mod.rs` are `a::b`). An import is any
`use`, `crate::` or `super::` path outside comments, doc attributes,
`#[cfg(doc)]` imports and the inline `mod tests`; a path to an item is
followed through `pub use` re-exports to the module that defines it. Imports
between a module and its own descendants are one concept and do not count.
The modules are then grouped by their first N path segments, for N = 1 to 4,
and any strongly connected group of two or more is reported with the paths
that join it.

A heuristic over text, not the compiler's view: good enough to keep the
layering from growing back, and cheap enough for CI.

Usage: scripts/check-import-cycles.py [SRC_DIR ...]
"""

import glob
import os
import re
import sys

DEPTHS = range(1, 5)

ITEM = re.compile(
    r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:unsafe\s+)?"
    r"(?:struct|enum|fn|trait|type|const|static|union)\s+(\w+)",
    re.M,
)


def read_modules(root):
    """Module path (`a::b`, "" for the crate root) -> its source, stripped."""
    modules = {}
    for folder, _, files in os.walk(root):
        for name in files:
            if not name.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(folder, name), root)[:-3]
            parts = rel.split(os.sep)
            if parts[-1] == "mod":
                parts = parts[:-1]
            if parts in (["lib"], ["main"]):
                parts = []
            with open(os.path.join(folder, name), encoding="utf-8") as f:
                src = f.read()
            src = re.sub(r"//[^\n]*", "", src)
            src = re.sub(r'doc\s*=\s*"(?:[^"\\]|\\.)*"', "", src)
            src = re.sub(r"#\[cfg\(doc\)\]\s*use[^;]*;", "", src)
            tests = src.find("#[cfg(test)]\nmod tests")
            if tests >= 0:
                src = src[:tests]
            modules["::".join(parts)] = src
    return modules


def split_top(s):
    """Splits `a, b::{c, d}` at its top-level commas."""
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    return [p for p in parts if p]


def expand(prefix, tree, out):
    """`a::{b, c::{d}}` -> `a::b`, `a::c::d` (renames dropped)."""
    for part in split_top(tree):
        if "{" in part:
            head, rest = part.split("{", 1)
            expand(prefix + head, rest[:-1], out)
        else:
            out.append(prefix + re.sub(r"\s+as\s+\w+$", "", part).strip())


def use_paths(src, public_only=False):
    pattern = r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);" if public_only else r"\buse\s+([^;]+);"
    out = []
    for stmt in re.findall(pattern, src, re.S):
        stmt = re.sub(r"\s+", " ", stmt)
        stmt = re.sub(r"\s*([{},]|::)\s*", r"\1", stmt).strip()
        expand("", stmt, out)
    return out


def absolute(module, path, modules):
    """`path` as written in `module`, as a list of segments from the crate root."""
    here = module.split("::") if module else []
    parts = path.split("::")
    if parts[0] == "crate":
        return parts[1:]
    if parts[0] == "self":
        return here + parts[1:]
    if parts[0] == "super":
        base = here[:]
        while parts and parts[0] == "super":
            base, parts = base[:-1], parts[1:]
        return base + parts
    if "::".join(here + [parts[0]]) in modules:
        return here + parts
    return None


def analyse(root):
    modules = read_modules(root)
    defined = {m: set(ITEM.findall(s)) for m, s in modules.items()}
    reexports = {}
    for m, src in modules.items():
        for p in use_paths(src, public_only=True):
            target = absolute(m, p, modules)
            if target:
                reexports[(m, target[-1])] = target

    def defining_module(parts, hops=0):
        for i in range(len(parts), -1, -1):
            m = "::".join(parts[:i])
            if m not in modules:
                continue
            if i == len(parts) or parts[i] in defined[m]:
                return m
            if (m, parts[i]) in reexports and hops < 10:
                return defining_module(reexports[(m, parts[i])] + parts[i + 1:], hops + 1)
            return m
        return None

    imports = []  # (from module, to module, path as written)
    for m, src in modules.items():
        paths = use_paths(src)
        paths += ["crate::" + p for p in re.findall(r"(?<!use )crate::((?:\w+::)*\w+)", src)]
        paths += re.findall(r"(?<![\w:])((?:super::)+(?:\w+::)*\w+)", src)
        for p in paths:
            target = absolute(m, p, modules)
            to = defining_module(target) if target is not None else None
            if to is not None:
                imports.append((m, to, p))
    return imports


def cycles(imports, depth):
    def group(m):
        return "::".join(m.split("::")[:depth])

    edges = {}
    for a, b, path in imports:
        ga, gb = group(a), group(b)
        if not ga or not gb or ga == gb or gb.startswith(ga + "::") or ga.startswith(gb + "::"):
            continue
        edges.setdefault(ga, {}).setdefault(gb, set()).add(path)
    # Tarjan's strongly connected components.
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
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
                found.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            visit(v)
    return [(c, {(a, b): sorted(edges[a][b]) for a in c for b in edges.get(a, {}) if b in c}) for c in found]


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    roots = sys.argv[1:] or sorted(glob.glob(os.path.join(here, "..", "crates", "*", "src")) + glob.glob(os.path.join(here, "..", "apps", "*", "src")))
    failed = False
    for root in roots:
        imports = analyse(root)
        seen = set()
        for depth in DEPTHS:
            for comp, joins in cycles(imports, depth):
                if tuple(comp) in seen:
                    continue
                seen.add(tuple(comp))
                failed = True
                print(f"{os.path.relpath(root)}: files import each other in a circle: {', '.join(comp)}")
                for (a, b), paths in sorted(joins.items()):
                    print(f"    {a} -> {b}  ({', '.join(paths[:3])})")
    if failed:
        sys.exit(1)
    print(f"no import circles in {len(roots)} crates")


if __name__ == "__main__":
    main()
