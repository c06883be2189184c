#!/usr/bin/env bash
# Checks the module layering of the collector and the SDK from their own
# source: which top-level module of a crate refers to which other one.
#
# An arrow `a -> b` means that code in module `a` (its file `src/a.rs` or
# folder `src/a/`) names an item of module `b`: `use crate::b::…`,
# `use crate::{b::…}`, a path `crate::b::…` in code, `super::b` from a
# top-level module, or `crate::Item` / `use crate::Item` where the crate root
# re-exports `Item` from `b` (`pub use b::Item`). Comments, string literals
# and `#[cfg(test)] mod … { … }` blocks are not read: a test module's imports
# are not part of the layering.
#
# It prints every arrow with the file:line of each reference, then fails
# (exit 1) when
#   - the arrows form a circle (a strongly connected set of modules) at the
#     top level, or between the files of one top-level folder (e.g.
#     `http/api.rs` <-> `http/openapi.rs`);
#   - an arrow is in the crate's FORBIDDEN list below ("a -> b", where b may
#     be `*` for any module, and `!x` means any module but x).
#
# Usage: scripts/check-layers.sh [crate-dir …]   (default: errorflow-collector errorflow-sdk)
# Needs python3. Not run by scripts/test.sh while the code still has circles.
set -euo pipefail
cd "$(dirname "$0")/.."

# The layers the code is meant to have (issue #28): storage knows neither
# triage nor HTTP; the pipeline is pure and knows only the model; the model
# and the wire protocol depend on nothing; the SDK's core client knows no
# integration (tracing layer, panic hook).
FORBIDDEN_errorflow_collector='
store -> triage
store -> http
store -> writer
store -> app
store -> alerts
store -> retention
pipeline -> !model
model -> *
credentials -> *
telemetry -> config
'
FORBIDDEN_errorflow_sdk='
protocol -> *
client -> layer
client -> panic
scope -> client
scope -> layer
transport -> client
transport -> layer
pending -> client
pending -> layer
record -> client
record -> layer
record -> scope
options -> client
options -> panic
'

crates=("$@")
[ ${#crates[@]} -eq 0 ] && crates=(errorflow-collector errorflow-sdk)

status=0
for crate in "${crates[@]}"; do
  name=$(basename "$crate"); var="FORBIDDEN_${name//[^A-Za-z0-9]/_}"
  FORBIDDEN="${!var:-}" python3 - "$crate" <<'PY' || status=1
import os, re, sys

crate = sys.argv[1]
src = os.path.join(crate, "src")


def strip(code):
    """The code without comments and string/char literal contents (newlines kept)."""
    out, i, n = [], 0, len(code)
    ident = lambda c: c.isalnum() or c == "_"
    while i < n:
        c = code[i]
        nxt = code[i + 1] if i + 1 < n else ""
        if c == "/" and nxt == "/":
            while i < n and code[i] != "\n":
                i += 1
        elif c == "/" and nxt == "*":
            depth = 0
            while i < n:
                if code.startswith("/*", i):
                    depth += 1; i += 2
                elif code.startswith("*/", i):
                    depth -= 1; i += 2
                    if depth == 0:
                        break
                else:
                    if code[i] == "\n":
                        out.append("\n")
                    i += 1
        elif c == "r" and (i == 0 or not ident(code[i - 1]) or code[i - 1] in "bc") \
                and re.match(r'r#*"', code[i:]):
            m = re.match(r'r(#*)"', code[i:])
            close = '"' + m.group(1)
            j = code.find(close, i + len(m.group(0)))
            j = n if j < 0 else j + len(close)
            out.append('""' + "\n" * code.count("\n", i, j))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and code[j] != '"':
                j += 2 if code[j] == "\\" else 1
            out.append('""' + "\n" * code.count("\n", i, j))
            i = j + 1
        elif c == "'":
            if nxt == "\\":
                j = code.find("'", i + 3)
                i = n if j < 0 else j + 1
            elif i + 2 < n and code[i + 2] == "'":
                i += 3
            else:
                out.append(c); i += 1
        else:
            out.append(c); i += 1
    return "".join(out)


def drop_test_modules(code):
    """Blanks `#[cfg(test)] mod name { … }` blocks, keeping their newlines."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*\{", code)
        if not m:
            return code
        depth, j = 0, m.end() - 1
        while j < len(code):
            if code[j] == "{":
                depth += 1
            elif code[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        code = code[: m.start()] + "\n" * code.count("\n", m.start(), j + 1) + code[j + 1 :]


# The crate's top-level modules, and `#[path]` renames, from its root file.
root_file = os.path.join(src, "lib.rs")
root = strip(open(root_file).read())
modules = set(re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", root, re.M))
raw_root = open(root_file).read()
renamed = {os.path.splitext(p)[0]: m for p, m in
           re.findall(r'#\[path\s*=\s*"([^"]+)"\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)', raw_root)}

# Items the root re-exports, by name: `pub use module::{A, B as C};`.
reexports = {}
for mod, body in re.findall(r"pub\s+use\s+(\w+)::(\{[^}]*\}|[\w]+(?:\s+as\s+\w+)?)\s*;", root):
    names = body.strip("{}").split(",")
    for name in names:
        name = name.strip()
        if not name:
            continue
        parts = name.split(" as ")
        reexports[parts[-1].strip()] = mod


def module_path(path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel and rel[0] in renamed:
        rel[0] = renamed[rel[0]]
    return rel  # [] for lib.rs/main.rs


def targets(expr):
    """Top-level names used by `crate::…`: `x::…`, `{x::…, y}` (one level of braces)."""
    expr = expr.strip()
    if expr.startswith("{"):
        depth, cur, names = 0, "", []
        for ch in expr[1:]:
            if ch == "{":
                depth += 1
            elif ch == "}":
                if depth == 0:
                    break
                depth -= 1
            if ch == "," and depth == 0:
                names.append(cur); cur = ""
            else:
                cur += ch
        names.append(cur)
        return [re.match(r"\s*(\w*)", n).group(1) for n in names if n.strip()]
    return [re.match(r"(\w*)", expr).group(1)]


edges = {}   # (from, to) -> [file:line]
inner = {}   # top -> {(from_file, to_file) -> [file:line]}
for dirpath, _, files in os.walk(src):
    for f in sorted(files):
        if not f.endswith(".rs"):
            continue
        path = os.path.join(dirpath, f)
        mp = module_path(path)
        if not mp:
            continue  # the crate root: a facade, not a layer
        code = drop_test_modules(strip(open(path).read()))
        for m in re.finditer(r"(?<![\w$])(crate::|(?:super::)+)\s*(\{|\w+)", code):
            kind, start = m.group(1), m.start(2)
            line = code.count("\n", 0, m.start()) + 1
            if kind == "crate::":
                base = []
            else:
                ups = kind.count("super")
                base = mp[: max(len(mp) - ups, 0)]
            for name in targets(code[start:start + 2000]):
                full = base + [name]
                top = full[0]
                if top not in modules:
                    top = reexports.get(top)
                    if top is None:
                        continue
                    full = [top]
                where = f"{os.path.relpath(path)}:{line}"
                if top != mp[0]:
                    edges.setdefault((mp[0], top), []).append(where)
                elif len(mp) > 1 and len(full) > 1 and full[1] != mp[1]:
                    # Between the files of one top-level folder.
                    a, b = "/".join(mp[:2]), "/".join(full[:2])
                    if os.path.exists(os.path.join(src, *full[:2])) or \
                       os.path.exists(os.path.join(src, *full[:2]) + ".rs"):
                        inner.setdefault(mp[0], {}).setdefault((a, b), []).append(where)


def circles(pairs):
    graph = {}
    for a, b in pairs:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]; counter[0] += 1
        stack.append(v); on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def forbidden(a, b, rules):
    for ra, rb in rules:
        if ra != a:
            continue
        if rb == "*" or rb == b or (rb.startswith("!") and rb[1:] != b):
            return f"{ra} -> {rb}"
    return None


rules = [tuple(x.strip() for x in line.split("->"))
         for line in os.environ.get("FORBIDDEN", "").splitlines() if "->" in line]

print(f"== {crate}: arrows between top-level modules")
for (a, b), where in sorted(edges.items()):
    print(f"{a} -> {b}   ({len(where)}: {', '.join(where)})")
failed = False
print(f"-- {crate}: circles")
for comp in circles(edges):
    failed = True
    print("CIRCLE: " + " <-> ".join(comp))
    for (a, b), where in sorted(edges.items()):
        if a in comp and b in comp:
            print(f"    {a} -> {b}: {', '.join(where)}")
for top, pairs in sorted(inner.items()):
    for comp in circles(pairs):
        failed = True
        print(f"CIRCLE inside {top}/: " + " <-> ".join(comp))
        for (a, b), where in sorted(pairs.items()):
            if a in comp and b in comp:
                print(f"    {a} -> {b}: {', '.join(where)}")
print(f"-- {crate}: forbidden arrows")
for (a, b), where in sorted(edges.items()):
    rule = forbidden(a, b, rules)
    if rule:
        failed = True
        print(f"FORBIDDEN ({rule}): {a} -> {b}: {', '.join(where)}")
print(f"-- {crate}: {'FAILED' if failed else 'ok'}")
sys.exit(1 if failed else 0)
PY
done
exit $status
