"""The package's layout: no import cycles among vocabopt modules (function-level imports included), data flowing one
way along the pipeline, the exported layer importing nothing of vocabopt, and small modules and functions."""

from __future__ import annotations

import ast
from pathlib import Path

import vocabopt

PACKAGE = Path(vocabopt.__file__).parent


def _module_name(path: Path) -> str:
    parts = ["vocabopt", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str, modules: set[str]) -> set[str]:
    """vocabopt modules that `path` imports anywhere in its body (top level or inside functions)."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, *([base] if base else [])])
            # `from . import x` names a submodule when one exists, else an attribute of the package
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        out |= {t for t in targets if t in modules}
    out.discard(name)
    return out


def import_graph() -> dict[str, set[str]]:
    files = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    modules = set(files)
    return {name: _imports(path, name, modules) for name, path in files.items()}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a path [a, b, ..., a], or None (iterative DFS with colours)."""
    colour = dict.fromkeys(graph, 0)  # 0 new, 1 on the stack, 2 done
    for root in sorted(graph):
        if colour[root]:
            continue
        stack = [(root, iter(sorted(graph[root])))]
        path = [root]
        colour[root] = 1
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                colour[node] = 2
                stack.pop()
                path.pop()
            elif colour[child] == 1:
                return path[path.index(child) :] + [child]
            elif colour[child] == 0:
                colour[child] = 1
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def test_the_checker_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_graph_sees_lazy_and_relative_imports():
    graph = import_graph()
    assert "vocabopt.adaptive_head" in graph["vocabopt.layer"]
    assert "vocabopt.plan" in graph["vocabopt.cli.optimize"]  # `from ..plan import Plan`
    assert graph["vocabopt.cli.optimize"] <= set(graph)


def test_no_import_cycles_among_vocabopt_modules():
    graph = import_graph()
    # The package's own __init__ re-exports the stages; a stage importing it back would be a cycle, so it counts too.
    assert _cycle(graph) is None, f"import cycle: {' -> '.join(_cycle(graph))}"


def test_the_exported_layer_is_standalone():
    assert import_graph()["vocabopt.adaptive_head"] == set()


# The pipeline, upstream first (README's Layout lists the same order). Modules in one entry may import each other
# (a package's own modules, or a stage's pair such as profile/profiler) as long as there is no cycle.
LAYERS = [
    ("errors", "artifacts", "version"),
    ("design",),
    ("tradeoff",),
    ("budget",),
    ("evidence",),
    ("corpus",),
    ("zipf",),
    ("stats",),
    ("analyze", "report"),
    ("plan",),
    ("adaptive_head",),
    ("kernels",),
    ("device",),
    ("profile",),
    ("profiler",),
    ("profile_cache",),
    ("cost",),
    ("search",),
    ("optimize",),
    ("layer",),
    ("export", "hf"),
    ("expand", "replan", "drift"),
    ("weights", "convert"),
    ("bench", "decode"),
    ("training",),
    ("quality",),
    ("validate",),
    ("tune",),
    ("plots",),
    ("html_report",),
    ("cli", "__main__"),
]


def _layer(module: str) -> int:
    top = module.split(".")[1]
    return next(i for i, names in enumerate(LAYERS) if top in names)


def test_data_flows_one_way():
    """No module imports one downstream of it (the package's __init__, the public facade, is exempt)."""
    upstream_only = [
        f"{m} -> {d}"
        for m, deps in import_graph().items()
        if m != "vocabopt"
        for d in deps
        if d != "vocabopt" and _layer(d) > _layer(m)
    ]
    assert upstream_only == []


def test_every_module_has_a_layer():
    assert all(_layer(m) >= 0 for m in import_graph() if m != "vocabopt")


MAX_MODULE_LINES = 500  # the exported layer is one file by design (STYLE.md), so it alone may be longer
MAX_FUNCTION_LINES = 85  # ~80, docstring included


def test_modules_and_functions_stay_small():
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text(encoding="utf-8")
        name = _module_name(path)
        if name != "vocabopt.adaptive_head" and source.count("\n") > MAX_MODULE_LINES:
            too_long.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}.{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert too_long == []


def test_readme_layout_names_every_module():
    """README's Layout block lists every module of the package (so the listing and the README tell one story)."""
    readme = (PACKAGE.parent / "README.md").read_text(encoding="utf-8")
    start = readme.index("```\nvocabopt/\n")
    block = readme[start : readme.index("```\n", start + 4)]
    missing = [
        path.name if path.parent == PACKAGE else f"{path.parent.name}/{path.stem}"
        for path in PACKAGE.rglob("*.py")
        if not path.name.startswith("__") and path.parent.name != "cli"
        if (path.name if path.parent == PACKAGE else path.stem) not in block
    ]
    assert missing == []
