"""The package import graph of opdlm_jax, from the source (no imports executed).

    python tests/import_graph.py     # prints the graph as a Markdown list (docs/ARCHITECTURE.md)

LAYERS lists the packages from the top down: a package may import only packages listed after it
(and itself). `tests/test_layering.py` checks the source against it.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "opdlm_jax"

# Top to bottom. The command-line modules (generate, export, chat, lm_eval) and the text-generation
# API sit on top of the library.
LAYERS = ("cli", "train", "eval", "distill", "diffusion", "decoding", "checkpoints", "data", "sharding",
          "models", "compilation_cache", "errors")
_CLI_MODULES = ("generate", "export", "chat", "lm_eval", "text_generation", "cli_errors", "__init__")


def unit_of(module: str) -> str:
    """opdlm_jax.<unit>[.rest] -> <unit> (top-level command modules count as "cli")."""
    parts = module.split(".")
    if len(parts) < 2:
        return "cli"
    return "cli" if parts[1] in _CLI_MODULES else parts[1]


def imports_of(path: Path) -> set[str]:
    """Every opdlm_jax / experiments module a file imports, at any depth (lazy imports included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
    return {m for m in found if m.split(".")[0] in ("opdlm_jax", "experiments")}


def package_graph() -> dict[str, set[str]]:
    """unit -> the units it imports (experiments shows up as "experiments")."""
    graph: dict[str, set[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        unit = unit_of(module)
        targets = graph.setdefault(unit, set())
        for imported in imports_of(path):
            if imported.split(".")[0] == "experiments":
                targets.add("experiments")
            elif imported != "opdlm_jax":
                target = unit_of(imported)
                if target in LAYERS and target != unit:
                    targets.add(target)
    return graph


def upward_imports() -> list[tuple[str, str]]:
    """(importer, imported) pairs that break the layering: upward, or into experiments."""
    rank = {unit: i for i, unit in enumerate(LAYERS)}
    bad = []
    for unit, targets in package_graph().items():
        for target in sorted(targets):
            if target == "experiments" or rank[target] < rank[unit]:
                bad.append((unit, target))
    return bad


def markdown() -> str:
    graph = package_graph()
    lines = ["Each package and what it imports (arrows only point down the list):", ""]
    for unit in LAYERS:
        targets = sorted(graph.get(unit, ()), key=LAYERS.index)
        module = unit in ("sharding", "compilation_cache", "errors")
        name = ("generate.py, export.py, chat.py, lm_eval.py, text_generation.py, cli_errors.py (CLIs and the "
                "text API)") if unit == "cli" else f"{unit}{'.py' if module else '/'}"
        lines.append(f"- `{name}` -> " + (", ".join(f"`{t}`" for t in targets) if targets else "nothing of ours"))
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown())
