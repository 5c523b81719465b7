"""The package has no import cycles, counting imports inside functions (a lazy import hides
a cycle from the interpreter, not from the reader), and `import roberta_torch` needs no
GPU, Triton, compiler or hub client."""

import ast
import pathlib

from helpers.paths import REPO_ROOT
from helpers.subprocesses import run_python

PACKAGE = REPO_ROOT / "roberta_torch"


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([node.module] if node.module else []))
                targets = [base] + [f"{base}.{alias.name}" for alias in node.names]
            for target in targets:
                # `from . import x` names a module x; `from .m import f` names module m.
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name and target.startswith("roberta_torch"):
                    graph[name].add(target)
    return graph


def find_cycle(graph):
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycles():
    graph = import_graph()
    # A package's __init__ re-exporting its submodules is not a cycle: only submodules that
    # import their own package's __init__ back would be; check edges between real modules.
    packages = {name for name in graph if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file()}
    modules_only = {n: {t for t in edges if t not in packages} for n, edges in graph.items() if n not in packages}
    assert find_cycle(modules_only) is None, " -> ".join(find_cycle(modules_only))


def test_import_needs_no_optional_dependency():
    script = (
        "import sys; import roberta_torch; "
        "heavy = [m for m in ('triton', 'h5py', 'kagglehub', 'huggingface_hub', 'transformers', 'keras', "
        "'tokenizers', 'sentencepiece') if m in sys.modules]; print(heavy)"
    )
    assert run_python(script, {}).strip() == "[]"
