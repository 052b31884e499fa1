"""The layers of docs/architecture.md, checked on the source: every import (module level or inside a
function) between the package's folders, and no cycle among them."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: folder of the repository -> the name its modules have once installed
FOLDERS = {**{p.name: p for p in (REPO / "sfx_cnnhit").iterdir() if (p / "__init__.py").exists()},
           "plugins": REPO / "plugins", "comparisons": REPO / "comparisons"}
#: top-level modules, imported by every layer: they import no folder of the package
TOP_LEVEL = sorted((REPO / "sfx_cnnhit").glob("*.py"))


def _imported(source: Path) -> list[str]:
    """Every module name ``source`` imports (module level or inside a function)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(source.read_text(), str(source))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
    return names


def _imports() -> dict[str, dict[str, set[str]]]:
    """folder -> imported folder -> the files importing it (top-level modules such as errors.py,
    types.py and detector.py, imported by every layer, are left out)."""
    graph: dict[str, dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for folder, path in FOLDERS.items():
        for source in path.rglob("*.py"):
            for name in _imported(source):
                parts = name.split(".")
                if parts[0] == "sfx_cnnhit" and len(parts) >= 2 and parts[1] in FOLDERS and parts[1] != folder:
                    graph[folder][parts[1]].add(str(source.relative_to(REPO)))
    return graph


def test_top_level_modules_import_no_folder():
    """errors.py, types.py, detector.py (the detector model: no file I/O) lie below every layer."""
    assert {p.name for p in TOP_LEVEL} >= {"errors.py", "types.py", "detector.py"}
    found = {
        p.name: sorted(n for n in _imported(p) if n.startswith("sfx_cnnhit.") and n.split(".")[1] in FOLDERS)
        for p in TOP_LEVEL
    }
    assert not any(found.values()), found
    file_io = {"os", "pathlib", "h5py", "shutil", "tempfile"} & set(_imported(REPO / "sfx_cnnhit" / "detector.py"))
    assert not file_io, f"detector.py does file I/O through {sorted(file_io)}"


def test_no_import_cycle_between_folders():
    graph = _imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(folder: str, path: list[str]) -> None:
        state[folder] = 1
        for target in graph[folder]:
            assert state.get(target) != 1, f"import cycle: {' -> '.join([*path, folder, target])}"
            if target not in state:
                visit(target, [*path, folder])
        state[folder] = 2

    for folder in list(FOLDERS):
        if folder not in state:
            visit(folder, [])


def test_each_layer_imports_only_what_lies_below_it():
    graph = _imports()
    forbidden = {
        "io": set(FOLDERS) - {"io"},
        "simulate": set(FOLDERS) - {"io", "simulate"},
        "models": {"finders", "explain", "pipeline", "cli", "plugins", "comparisons"},
        "explain": {"finders", "pipeline", "cli", "plugins", "comparisons"},
        "finders": {"pipeline", "cli", "plugins", "comparisons"},
        "comparisons": {"pipeline", "cli", "plugins"},
        "pipeline": {"cli", "plugins"},
    }
    for folder, banned in forbidden.items():
        found = {target: sorted(files) for target, files in graph[folder].items() if target in banned}
        assert not found, f"{folder}/ imports {found}"
    importers = sorted(f for f in FOLDERS if "plugins" in graph[f] and f != "cli")
    assert not importers, f"plugins/ must stay a leaf; imported by {importers}"


def test_no_function_is_longer_than_80_lines():
    """Long functions are split by meaning into named helpers; the numba kernel is the one exception."""
    exempt = {("finders", "search_peaks")}
    long = []
    for folder, path in FOLDERS.items():
        for source in path.rglob("*.py"):
            for node in ast.walk(ast.parse(source.read_text(), str(source))):
                is_def = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
                if is_def and (folder, node.name) not in exempt and node.end_lineno - node.lineno >= 80:
                    long.append(f"{source.relative_to(REPO)}:{node.lineno} {node.name}")
    assert not long, long
