"""The import direction of the production code (issue 11, ../shared/DESIGN.md
"Layout"): models <- permissions/lifecycle/audit <- pipeline/drift <- services/policy
<- tasks/API/admin/commands. Read from the source with `ast` (function-level imports
included: a lazy import is still a dependency), so a circle cannot hide behind an
import placed inside a function."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("accounts", "adapters", "approvals", "audit", "changes", "config", "dns_adapters", "drift",
            "firewall_adapters", "ops", "pipeline", "changegate_cli", "changegate_audit")

# (pattern over the dotted module name, layer). First match wins; a module may
# import only modules of its own layer or below.
LAYERS: list[tuple[str, int]] = [
    (r"^(adapters|dns_adapters|firewall_adapters|changegate_cli|changegate_audit)(\.|$)", 0),
    (r"^accounts\.(client_ip|mfa|conf)$", 0),
    (r"^ops\.logs$", 0),
    # Wiring read by everything: settings, their env parsing, the Celery app object.
    (r"^config(\.(env|celery_app|settings(\..*)?))?$", 0),
    (r"^(changes|approvals)\.(models|errors)$", 1),
    # changes.models is a package (one module per concern); its modules are models too.
    (r"^changes\.models\.", 1),
    (r"^changes\.locking$", 2),
    (r"^audit\.chain$", 3),
    (r"^changes\.(lifecycle|kinds|adapters)$", 4),
    (r"^changes\.permissions$", 5),
    (r"^(changes\.selectors|approvals\.standing|audit\.(checkpoints|identity|selectors|lines))$", 6),
    (r"^pipeline\.(publish|faults|lease|check_specs|checks|outbox|bake_time|windows|phase)$", 7),
    (r"^drift\.", 8),
    (r"^pipeline\.execution$", 9),
    (r"^pipeline\.window_hold$", 9),
    (r"^(approvals\.policy|changes\.services(\..*)?|audit\.export|audit\.evidence|ops\.metrics|accounts\.oidc)$", 10),
    # Entry points: nothing below imports them.
    (r".", 11),
]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _layer(module: str) -> int:
    return next(rank for pattern, rank in LAYERS if re.search(pattern, module))


def _graph() -> dict[str, set[str]]:
    modules = {
        _module_name(path): path
        for package in PACKAGES if (ROOT / package).is_dir()
        for path in (ROOT / package).rglob("*.py") if "migrations" not in path.parts
    }
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join([*anchor, base] if base else anchor)
                # `from pkg import module` names a module; `from module import name` does not.
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and not (path.name == "__init__.py" and target.startswith(name)):
                    edges.add(target)
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in graph.get(node, ()):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return _graph()


def test_the_graph_is_read(graph):
    # Guards the test itself: a parser that found nothing would pass everything below.
    assert "pipeline.execution" in graph["approvals.policy"]
    assert "changes.models" in graph["pipeline.execution"]


def test_no_module_imports_itself_back_through_a_circle(graph):
    assert _cycles(graph) == []


def test_imports_point_down_the_layers(graph):
    upward = sorted(f"{name} ({_layer(name)}) -> {target} ({_layer(target)})"
                    for name, targets in graph.items() for target in targets if _layer(target) > _layer(name))
    assert upward == []


def test_the_circle_finder_finds_a_lazy_circle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
