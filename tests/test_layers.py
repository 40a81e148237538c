"""Issue 17: the packages of edgegate/ form layers that only point down, and no module-level
import circle exists. Read from the source with ast (nothing is imported): a new import against
the order fails here, naming the two modules; an exception needs an entry below with its reason."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent / "edgegate"

# lowest first; a module may import its own layer and the layers below it
LAYERS = [
    {"errors", "_deps", ""},                  # "" = edgegate/__init__.py (the version)
    {"trust"},                                # path guard, zip checks, log redaction, children
    {"progress"},
    {"config"},
    {"discover", "data"},
    {"report", "policy"},                     # the report's records and the pure policy check
    {"frontends", "stages"},
    {"targets"},
    {"gate"},                                 # the run's flow
    {"github"},
    {"init", "action", "cli", "__main__"},
]
RANK = {pkg: i for i, layer in enumerate(LAYERS) for pkg in layer}

# upward imports that exist on purpose, each with why (module-level ones first)
ALLOWED_UP = {
    ("edgegate.config.jsonschema", "edgegate.report.model"):
        "`edgegate schema` writes the report's JSON schema beside the config's",
    ("edgegate.frontends.export_check", "edgegate.targets.onnxruntime"):
        "function-level: the export check runs the exported graph on the ONNX Runtime runner",
    ("edgegate.policy.check", "edgegate.stages.stats"):
        "function-level: the paired accuracy interval a limit is decided on",
    ("edgegate.stages.memory", "edgegate.targets"):
        "function-level, in the measuring child: the target's own runner loads the artifact",
    ("edgegate.stages.memory", "edgegate.targets.base"):
        "function-level, in the measuring child: the runner's Loadable binding",
    ("edgegate.stages.memory", "edgegate.gate.model"):
        "function-level, in the measuring child: the run context's footprints",
    ("edgegate.trust.isolation", "edgegate.gate.model"):
        "function-level: gate_device_isolated's child side (to move into gate/ with the split "
        "of gate/model.py)",
    ("edgegate.trust.isolation", "edgegate.progress"):
        "function-level: the child's progress lines",
    ("edgegate.trust.isolation", "edgegate.report.model"):
        "function-level: the device child's result record",
    ("edgegate.trust.repo_code", "edgegate.config.schema"):
        "function-level: the model entry whose code references are checked",
}


def _module(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _imports() -> tuple[set[str], dict[tuple[str, str], bool]]:
    """Every edgegate module, and each import edge -> whether it runs at module level."""
    files = {_module(p): p for p in ROOT.rglob("*.py")}
    edges: dict[tuple[str, str], bool] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        typing_only = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
                       and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
        top = {id(n) for stmt in tree.body for n in ast.walk(stmt)
               if not isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[:len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                if name in files and name != module:
                    key = (module, name)
                    edges[key] = edges.get(key, False) or id(node) in top
    return set(files), edges


def test_every_package_has_a_layer():
    modules, _ = _imports()
    assert sorted({_package(m) for m in modules} - set(RANK)) == []


def test_imports_only_point_down():
    _, edges = _imports()
    up = sorted((a, b, "module level" if top else "in a function") for (a, b), top in edges.items()
                if RANK[_package(b)] > RANK[_package(a)] and (a, b) not in ALLOWED_UP)
    assert up == [], "imports against the layer order (tests/test_layers.py LAYERS): " + repr(up)
    stale = sorted(k for k in ALLOWED_UP if k not in edges)
    assert stale == [], f"allowed exceptions that no longer exist: remove them: {stale}"


def test_no_module_level_import_circle():
    modules, edges = _imports()
    graph = {m: sorted(b for (a, b), top in edges.items() if a == m and top) for m in modules}
    circles, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                circles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for m in sorted(modules):
        if m not in state:
            visit(m, [m])
    assert circles == []


def test_the_top_level_holds_few_modules():
    loose = sorted(p.name for p in ROOT.glob("*.py"))
    assert len(loose) <= 8, loose
