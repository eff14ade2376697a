#!/usr/bin/env python3
"""docs/threats.md stays true: every test it names exists where it says, and every catalogue
id that a test is named after (`fn h19_...`, `fn k4_k5_...`) has its entry in the document."""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
# The catalogue families (J: algorithms, K: keys, C: claims, ..., D: listener DoS limits); `b25` in a test name is an
# RFC appendix number, not an id.
ID_IN_NAME = re.compile(r"\bfn\s+((?:[jkcetihspmxrdo]\d{1,2}_)+)")


def main():
    with open(os.path.join(ROOT, "docs/threats.md"), encoding="utf-8") as f:
        doc = f.read()
    problems = []
    for path, name in sorted(set(re.findall(r"`((?:src|tests)/[\w/]+\.rs)::(\w+)`", doc))):
        full = os.path.join(ROOT, path)
        if not os.path.exists(full):
            problems.append(f"{path}::{name}: no such file")
            continue
        with open(full, encoding="utf-8") as f:
            if not re.search(r"\bfn\s+" + name + r"\b", f.read()):
                problems.append(f"{path}::{name}: no such test")
    documented = set(re.findall(r"\*\*([A-Z]\d{1,2})\b", doc))
    for root in ("src", "tests"):
        for d, _, files in os.walk(os.path.join(ROOT, root)):
            for fn in files:
                if not fn.endswith(".rs"):
                    continue
                path = os.path.join(d, fn)
                with open(path, encoding="utf-8") as f:
                    for m in ID_IN_NAME.finditer(f.read()):
                        for ident in m.group(1).strip("_").split("_"):
                            if ident.upper() not in documented:
                                rel = os.path.relpath(path, ROOT)
                                problems.append(f"{rel}: a test is named after {ident.upper()}, "
                                                "which docs/threats.md does not describe")
    for p in problems:
        print(f"threats: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"threats: {len(documented)} ids described; every test named in docs/threats.md exists")
    return 0


if __name__ == "__main__":
    sys.exit(main())
