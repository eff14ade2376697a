#!/usr/bin/env python3
"""The house plan, checked: the arrows between Portcullis's modules that must never exist.

Reads every `crate::...` / `super::...` path in src/ (test code left out: files named
tests.rs or *_tests.rs, and everything after a file's `#[cfg(test)]` module) and fails,
naming file and line, when

1. a module below config (auth, policy, routing, ratelimit, upstream, engine, forward,
   assertion) imports crate::config: config compiles *into* their types, never the reverse;
2. a file outside src/gateway/ names Pingora's proxy (`pingora::proxy`, its `Session`) or
   implements a Pingora service or app (`BackgroundService`, `ServeHttp`, `ProxyHttp`);
3. a file under src/cli/ imports crate::gateway: the tools share the pure core, not the glue;
4. a file under src/auth/ imports policy, engine, routing or ratelimit;
5. a file under src/config/ imports crate::app or crate::gateway: config never composes;
6. there is an import circle between top-level modules, or between the files of one folder
   (a folder's mod.rs is its face and is left out of the folder's own circle check);
7. more than one import goes up the floors listed in FLOORS.

`--self-test` copies src/ to a temporary directory, adds one forbidden arrow of each kind in
turn, and fails unless every one is caught (so the check itself cannot rot into a no-op).
"""
import os
import re
import shutil
import sys
import tempfile

# Lower floors first; a module may import its own floor and those below.
FLOORS = [
    {"metrics", "reload", "redis_conn", "request_id", "access_log"},
    {"auth"},
    {"policy", "assertion"},
    {"routing"},
    {"upstream", "forward", "ratelimit"},
    {"config", "engine"},
    {"app"},
    {"gateway"},
    {"cli"},
]
BELOW_CONFIG = ["auth/", "policy/", "routing/", "ratelimit/", "upstream/",
                "engine.rs", "forward.rs", "assertion.rs"]
PINGORA_GLUE = re.compile(
    r"pingora::proxy|\bimpl\b[^{;]*\b(BackgroundService|ServeHttp|ProxyHttp)\b[^{;]*\bfor\b")
PATH = re.compile(r"\b(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)+)")
USE_GROUP = re.compile(r"\buse\s+(crate|super)((?:::[A-Za-z_][A-Za-z0-9_]*)*)::\{([^;]*)\};", re.S)


def floor_of(module):
    for i, f in enumerate(FLOORS):
        if module in f:
            return i
    return None


def production_text(text):
    """The file without its trailing `#[cfg(test)]` module, and without comments (a path
    named in a doc comment is no import). Line numbers are kept."""
    m = re.search(r"^#\[cfg\(test\)\]\s*\n\s*mod\s+\w+\s*\{", text, re.M)
    if m:
        text = text[: m.start()]
    return re.sub(r"^\s*//.*$", "", text, flags=re.M)


def sources(src):
    for root, _, files in os.walk(src):
        for f in sorted(files):
            if not f.endswith(".rs") or f == "tests.rs" or f.endswith("_tests.rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src).replace(os.sep, "/")
            with open(path, encoding="utf-8") as fh:
                yield rel, production_text(fh.read())


def module_path(rel):
    """`auth/jwt.rs` -> ['auth', 'jwt']; `auth/mod.rs` -> ['auth']; lib.rs/main.rs -> []."""
    parts = rel[:-3].split("/")
    if parts[-1] in ("mod", "lib", "main"):
        parts = parts[:-1]
    return parts


def references(rel, text):
    """(line number, absolute module path as a list) for every crate::/super:: path."""
    here = module_path(rel)
    found = []

    def absolute(root, rest):
        segs = [s for s in rest.split("::") if s]
        if root == "crate":
            return segs
        # In a/b.rs and in a/b/mod.rs alike, `super` is a.
        base = here[:-1]
        while segs and segs[0] == "super":
            base = base[:-1]
            segs = segs[1:]
        return base + segs

    for m in USE_GROUP.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        prefix = m.group(2)
        for item in re.split(r",", m.group(3)):
            item = item.strip().split(" as ")[0].strip()
            head = item.split("::")[0].strip("{} \n")
            if head and head != "self":
                found.append((line, absolute(m.group(1), prefix + "::" + head)))
            elif head == "self":
                found.append((line, absolute(m.group(1), prefix)))
    for m in PATH.finditer(text):
        line = text.count("\n", 0, m.start()) + 1
        found.append((line, absolute(m.group(1), m.group(2))))
    return found


def check(src):
    problems = []
    files = dict(sources(src))
    top_edges = {}
    folder_edges = {}
    upward = []
    for rel, text in files.items():
        here = module_path(rel)
        top = here[0] if here else None
        for line, target in references(rel, text):
            if not target:
                continue
            where = f"src/{rel}:{line}"
            dest = target[0]
            if dest == "config" and any(rel.startswith(p) for p in BELOW_CONFIG):
                problems.append(f"{where}: imports crate::config (rule 1)")
            if rel.startswith("cli/") and dest == "gateway":
                problems.append(f"{where}: cli imports gateway (rule 3)")
            if rel.startswith("auth/") and dest in ("policy", "engine", "routing", "ratelimit"):
                problems.append(f"{where}: auth imports {dest} (rule 4)")
            if rel.startswith("config/") and dest in ("app", "gateway"):
                problems.append(f"{where}: config imports {dest} (rule 5)")
            if top and dest != top and floor_of(dest) is not None:
                top_edges.setdefault(top, set()).add(dest)
                lo, hi = floor_of(top), floor_of(dest)
                if lo is not None and hi > lo:
                    upward.append(f"{where}: {top} (floor {lo}) imports {dest} (floor {hi})")
            # Sibling files of one folder.
            if len(here) >= 2 and len(target) >= len(here) and target[: len(here) - 1] == here[:-1]:
                sib = target[len(here) - 1]
                if sib != here[-1]:
                    folder = "/".join(here[:-1])
                    folder_edges.setdefault(folder, {}).setdefault(here[-1], set()).add(sib)
        for i, l in enumerate(text.split("\n"), 1):
            if not rel.startswith("gateway/") and PINGORA_GLUE.search(l):
                problems.append(f"src/{rel}:{i}: Pingora glue outside gateway/ (rule 2)")
    for cycle in cycles(top_edges):
        problems.append("import circle between modules: " + " -> ".join(cycle) + " (rule 6)")
    for folder, edges in folder_edges.items():
        for cycle in cycles(edges):
            problems.append(f"import circle in src/{folder}/: " + " -> ".join(cycle) + " (rule 6)")
    if len(upward) > 1:
        problems.append("more than one upward import (rule 7):\n    " + "\n    ".join(upward))
    return problems, upward


def cycles(edges):
    """One representative cycle per strongly connected component of more than one node."""
    index, low, on, stack, out = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
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
                out.append(sorted(comp) + [sorted(comp)[0]])

    for v in sorted(set(edges) | {w for ws in edges.values() for w in ws}):
        if v not in index:
            visit(v)
    return out


def self_test(src):
    injections = [
        ("routing/mod.rs", "use crate::config::Config;\n", "rule 1"),
        ("auth/jwt.rs", "fn _f(_: &crate::policy::Denial) {}\n", "rule 4"),
        ("cli/explain.rs", "use crate::gateway::proxy::Gateway;\n", "rule 3"),
        ("config/mod.rs", "use crate::app::App;\n", "rule 5"),
        ("engine.rs", "use pingora::proxy::Session;\n", "rule 2"),
        ("policy/mod.rs", "fn _g(_: &crate::engine::Engine) {}\n", "rule 6"),
    ]
    failures = []
    for rel, line, rule in injections:
        with tempfile.TemporaryDirectory() as tmp:
            copy = os.path.join(tmp, "src")
            shutil.copytree(src, copy)
            with open(os.path.join(copy, rel), "r+", encoding="utf-8") as fh:
                text = fh.read()
                # After the module doc, before everything else.
                at = 0
                for m in re.finditer(r"^//!.*\n", text, re.M):
                    if m.start() != at:
                        break
                    at = m.end()
                fh.seek(0)
                fh.write(text[:at] + line + text[at:])
            problems, _ = check(copy)
            if not any(rule in p for p in problems):
                failures.append(f"adding `{line.strip()}` to src/{rel} was not caught ({rule})")
    return failures


def main():
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
    if "--self-test" in sys.argv:
        failures = self_test(src)
        for f in failures:
            print(f"layers self-test: {f}", file=sys.stderr)
        if failures:
            return 1
        print("layers self-test: every forbidden arrow added was caught")
        return 0
    problems, upward = check(src)
    for p in problems:
        print(f"layers: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"layers: no forbidden arrow, no import circle, {len(upward)} upward import(s)")
    for u in upward:
        print(f"  {u}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
