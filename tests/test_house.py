"""The house (issue 28): no import circle in flowrl/ or components/, small modules, commands that only parse and print.

Imports are read from the source (every ``import``, at the top, inside functions and under ``TYPE_CHECKING`` alike),
and importing ``a.b.c`` also counts as importing the packages ``a.b`` and ``a`` whose ``__init__`` runs first."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 360  # lines: "no module over ~350 lines"


def modules() -> dict[str, Path]:
    found = {}
    for path in [*ROOT.glob("flowrl/**/*.py"), *ROOT.glob("components/**/*.py")]:
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def import_graph(mods: dict[str, Path]) -> dict[str, set[str]]:
    """``module -> modules it imports`` (ours only), with each imported module's enclosing packages."""
    graph = {m: set() for m in mods}
    for m, path in mods.items():
        package = m if path.name == "__init__.py" else m.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                while name and name not in mods:
                    name = name.rpartition(".")[0]
                while name:  # the module, then each package around it
                    if name in mods and name != m and not m.startswith(name + "."):
                        graph[m].add(name)
                    name = name.rpartition(".")[0]
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circle_in_flowrl_or_components():
    assert cycles(import_graph(modules())) == []


def test_the_check_finds_a_circle_when_one_is_made(tmp_path):
    graph = import_graph(modules())
    graph["flowrl.run.files"].add("flowrl.trainer")  # trainer -> run.checkpoints -> run.files -> trainer
    assert any({"flowrl.trainer", "flowrl.run.files"} <= set(c) for c in cycles(graph))


def test_arrows_point_down_the_layers():
    # components never import flowrl; the run package, config and envs never import the loop, the builder, the
    # sweeps, the reports or the commands; export builds through the builder, never the loop; nothing but the
    # commands imports the commands.
    graph = import_graph(modules())
    rules = {"components": ("flowrl",),
             "flowrl.run": ("flowrl.trainer", "flowrl.build", "flowrl.sweep", "flowrl.report", "flowrl.commands"),
             "flowrl.config": ("flowrl.trainer", "flowrl.run", "flowrl.sweep", "flowrl.report", "flowrl.commands"),
             "flowrl.envs": ("flowrl.trainer", "flowrl.build", "flowrl.config", "flowrl.run", "flowrl.commands"),
             "flowrl.agents": ("flowrl.trainer", "flowrl.build", "flowrl.config", "flowrl.run", "flowrl.commands"),
             "flowrl.export": ("flowrl.trainer", "flowrl.sweep", "flowrl.report", "flowrl.commands")}
    for module, imported in graph.items():
        for layer, forbidden in rules.items():
            if module == layer or module.startswith(layer + "."):
                bad = [i for i in imported if any(i == f or i.startswith(f + ".") for f in forbidden)]
                assert not bad, f"{module} imports {bad}"
        if not module.startswith("flowrl.commands"):
            assert not [i for i in imported if i.startswith("flowrl.commands")], module


@pytest.mark.parametrize("path", sorted(modules().values()), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_module_over_the_limit(path):
    assert len(path.read_text().splitlines()) <= LIMIT
