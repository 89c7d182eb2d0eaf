"""The package's modules import each other without circles, also through imports inside functions."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "src" / "eventprop"


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _graph():
    mods = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        pkg = m if path.name == "__init__.py" else m.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level:
                base = pkg.split(".")
                base = base[: len(base) - (node.level - 1)]
                stem = ".".join(base + ([node.module] if node.module else []))
                targets = [stem] + [f"{stem}.{a.name}" for a in node.names]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("eventprop"):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("eventprop")]
            for t in targets:
                if t in mods and t != m and not m.startswith(t + "."):  # (a package's own __init__ is not a circle)
                    graph[m].add(t)
    return graph


def _cycle(graph):
    state = {}

    def visit(m, stack):
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state:
                c = visit(t, stack + [t])
                if c:
                    return c
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state:
            c = visit(m, [m])
            if c:
                return c
    return None


def test_no_import_circle():
    graph = _graph()
    assert len(graph) > 20 and graph["eventprop.train"], graph
    c = _cycle(graph)
    assert c is None, " -> ".join(c)


def test_the_checker_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


# The package's layers, bottom up: a module imports only modules of lower layers (also inside
# functions), so nothing reaches up. A new module gets its place here.
LAYERS = [
    ["errors", "optim", "exact", "_binning", "neurons", "neurons.lif", "engine.contract"],
    ["neurons.alif", "events", "io"],
    ["network", "data._common", "data.yinyang", "neurons.hooks"],
    ["data.augment", "data.mnist", "data.shd", "data.spikefile", "engine._kernels"],
    ["data", "engine.cpu", "engine.cuda"],
    ["engine.registry"],
    ["engine"],
    ["losses", "torch"],
    ["config"],
    ["train"],
    ["gradcheck", "sweep", "nir_io", "bench"],
    ["xval", "plots"],
    ["analyse"],
    ["cli"],
]


def test_no_upward_import():
    rank = {f"eventprop.{m}": i for i, layer in enumerate(LAYERS) for m in layer}
    rank["eventprop"] = 0
    graph = _graph()
    missing = sorted(set(graph) - set(rank))
    assert not missing, f"modules without a layer in LAYERS: {missing}"
    up = [f"{m} (layer {rank[m]}) -> {t} (layer {rank[t]})" for m in graph for t in graph[m] if rank[t] >= rank[m]]
    assert not up, "imports that do not go down: " + "; ".join(sorted(up))
