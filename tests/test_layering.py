"""The rules of the house, read from the source with `ast` (the package is never imported here).

Which layer may import which third-party package (boto3/botocore/s3transfer only in transfer/, submitit only in
slurm/, subprocess only where processes are started), that the pure model/ imports nothing of the project but itself
and errors.py, that no module reaches for another module's private (_underscore) name, that module-level imports form
no cycle, and that no layer imports one above it. Each failure names the file, the line and the rule.

Decisions recorded here:
- model/objectmeta.py stamps objects with the package version (`from .. import __version__`). The root package's
  `__version__` is allowed to model/ explicitly, and `fs3g_hpc/__init__.py` must itself import nothing of the project,
  so that import can never pull anything but a constant into the pure layer.
- The cycle check follows module-level imports only. Imports inside a function body run when it is called (they are
  lazy, often chosen to break exactly such a cycle) and imports under `if TYPE_CHECKING:` never run; both are left out
  of the cycle graph. Every other rule counts them.
- Importing `a.b.c` also runs the packages `a` and `a.b`; the cycle graph leaves those implicit parent edges out (the
  parent is always initialising already when its child is reached through it).
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = "fs3g_hpc"

# Third-party (or stdlib) top-level modules and the only module prefixes allowed to import them. A prefix matches the
# module itself and everything below it.
EXTERNAL_OWNERS = {
    "boto3": ("fs3g_hpc.transfer",),
    "botocore": ("fs3g_hpc.transfer",),
    "s3transfer": ("fs3g_hpc.transfer",),
    "submitit": ("fs3g_hpc.slurm",),
    # Processes are started by slurm/ (Slurm commands, submitit's local executor), by the local shard runner and by
    # the demo (it runs fs3g itself); the demo lives at fs3g_hpc/demo.py or, after the CLI move, fs3g_hpc/cli/demo.py.
    "subprocess": ("fs3g_hpc.slurm", "fs3g_hpc.localexec", "fs3g_hpc.demo", "fs3g_hpc.cli.demo"),
}

MODEL = "fs3g_hpc.model"
MODEL_MAY_IMPORT = ("fs3g_hpc.model", "fs3g_hpc.errors")

LOWER = ("fs3g_hpc.model", "fs3g_hpc.config", "fs3g_hpc.transfer", "fs3g_hpc.slurm", "fs3g_hpc.runs")
PIPELINES = ("fs3g_hpc.backup", "fs3g_hpc.restore", "fs3g_hpc.compare")
# The CLI: cli.py or the cli/ package (with compat and demo inside), and compat.py/demo.py while they stand beside it.
CLI = ("fs3g_hpc.cli", "fs3g_hpc.compat", "fs3g_hpc.demo")


def under(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


@dataclass(frozen=True)
class Import:
    line: int
    module: str  # absolute dotted name of the module the statement names (`from X import ...` -> X)
    names: tuple[str, ...]  # names taken by `from X import a, b`; empty for `import X`
    lazy: bool  # inside a function body or under `if TYPE_CHECKING:`


@dataclass
class Module:
    name: str
    path: Path
    rel: str  # path relative to the tree's root, for messages
    imports: list[Import] = field(default_factory=list)
    private_attrs: list[tuple[int, str, str]] = field(default_factory=list)  # (line, module, attribute)


def module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def resolve(importer: Module, level: int, module: str | None) -> str:
    """The absolute name a (possibly relative) import names."""
    if level == 0:
        return module or ""
    base = importer.name.split(".")
    if importer.path.name != "__init__.py":
        base.pop()  # a plain module's package
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join(base + ([module] if module else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


class _Reader(ast.NodeVisitor):
    def __init__(self, module: Module, modules: set[str]) -> None:
        self.module, self.modules, self.depth = module, modules, 0
        self.bound: dict[str, str] = {}  # local name -> project module it is bound to (for `mod._private` access)

    def _lazy(self, node: ast.AST) -> None:
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _lazy

    def visit_If(self, node: ast.If) -> None:
        if _is_type_checking(node.test):
            self.depth += 1
            for child in node.body:
                self.visit(child)
            self.depth -= 1
            for child in node.orelse:
                self.visit(child)
        else:
            self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self.module.imports.append(Import(node.lineno, alias.name, (), self.depth > 0))
            if alias.asname and alias.name in self.modules:
                self.bound[alias.asname] = alias.name

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        target = resolve(self.module, node.level, node.module)
        names = tuple(a.name for a in node.names)
        self.module.imports.append(Import(node.lineno, target, names, self.depth > 0))
        for alias in node.names:
            if f"{target}.{alias.name}" in self.modules:
                self.bound[alias.asname or alias.name] = f"{target}.{alias.name}"

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if isinstance(node.value, ast.Name) and node.value.id in self.bound and is_private(node.attr):
            self.module.private_attrs.append((node.lineno, self.bound[node.value.id], node.attr))
        self.generic_visit(node)


def read_tree(root: Path, package: str = PACKAGE) -> dict[str, Module]:
    """Every module of `package` under `root`, with its imports."""
    paths = sorted((root / package).rglob("*.py"))
    modules = {module_name(p, root): Module(module_name(p, root), p, p.relative_to(root).as_posix()) for p in paths}
    for module in modules.values():
        _Reader(module, set(modules)).visit(ast.parse(module.path.read_bytes(), filename=str(module.path)))
    return modules


def targets(imp: Import, modules: dict[str, Module]) -> list[str]:
    """The project modules an import statement runs: `from pkg import sub` runs pkg.sub, `from m import x` runs m."""
    if not imp.names:
        return [imp.module] if imp.module in modules else []
    out = []
    for name in imp.names:
        sub = f"{imp.module}.{name}"
        out.append(sub if sub in modules else imp.module)
    return [t for t in dict.fromkeys(out) if t in modules]


def project_imports(imp: Import, package: str) -> bool:
    return imp.module == package or imp.module.startswith(package + ".")


def violations(modules: dict[str, Module], package: str = PACKAGE) -> list[str]:
    """Every breach of the rules, as `file:line: [rule] what`."""
    p = package
    ext_owners = {k: tuple(v.replace(PACKAGE, p, 1) for v in owners) for k, owners in EXTERNAL_OWNERS.items()}
    model, model_may = MODEL.replace(PACKAGE, p, 1), tuple(m.replace(PACKAGE, p, 1) for m in MODEL_MAY_IMPORT)
    lower, pipelines, cli = ((tuple(m.replace(PACKAGE, p, 1) for m in group)) for group in (LOWER, PIPELINES, CLI))
    out: list[str] = []
    for mod in sorted(modules.values(), key=lambda m: m.rel):
        for imp in mod.imports:
            where = f"{mod.rel}:{imp.line}"
            top = imp.module.split(".")[0]
            if top in ext_owners and not under(mod.name, ext_owners[top]):
                out.append(f"{where}: [external] imports {imp.module}; only {', '.join(ext_owners[top])} may")
            if not project_imports(imp, p):
                continue
            if mod.name == p:
                out.append(f"{where}: [root] the package's __init__ imports {imp.module}; it holds only constants")
            hit = targets(imp, modules) or [imp.module]
            if under(mod.name, (model,)):
                for t in hit:
                    version_only = t == p and imp.names == ("__version__",)
                    if not under(t, model_may) and not version_only:
                        out.append(f"{where}: [model] {mod.name} imports {t}; model/ imports only model/ and errors")
            for name in imp.names:
                own_private_module = f"{imp.module}.{name}" in modules and under(mod.name, (imp.module,))
                if is_private(name) and imp.module != mod.name and not own_private_module:
                    out.append(f"{where}: [private] imports {name} from {imp.module}; make it public in its home")
            for t in hit:
                if under(mod.name, lower) and under(t, pipelines + cli):
                    out.append(f"{where}: [upward] lower layer {mod.name} imports {t}")
                elif under(mod.name, pipelines) and under(t, cli) and not under(mod.name, cli):
                    out.append(f"{where}: [upward] pipeline {mod.name} imports the CLI ({t})")
        for line, owner, attr in mod.private_attrs:
            if owner != mod.name:
                out.append(f"{mod.rel}:{line}: [private] uses {owner}.{attr}; make it public in its home")
    out += cycles(modules)
    return out


def cycles(modules: dict[str, Module]) -> list[str]:
    """Module-level import cycles (Tarjan's strongly connected components), each with the lines that close it."""
    edges: dict[str, dict[str, int]] = {name: {} for name in modules}
    for mod in modules.values():
        for imp in mod.imports:
            if not imp.lazy:
                for t in targets(imp, modules):
                    if t != mod.name:
                        edges[mod.name].setdefault(t, imp.line)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def strongconnect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            strongconnect(v)
    out = []
    for component in found:
        members = set(component)
        lines = [f"{modules[a].rel}:{line} -> {b}" for a in component for b, line in sorted(edges[a].items())
                 if b in members]
        out.append(f"{modules[component[0]].rel}:{edges[component[0]][min(b for b in edges[component[0]] if b in members)]}"
                   f": [cycle] {' <-> '.join(component)} ({'; '.join(lines)})")
    return out


# ---------------------------------------------------------------------------------------------------------------------
# The real tree.

def test_the_house_keeps_its_rules() -> None:
    found = violations(read_tree(REPO))
    assert not found, "layering rules broken:\n" + "\n".join(found)


def test_the_checker_reads_the_whole_package() -> None:
    modules = read_tree(REPO)
    assert {"fs3g_hpc", "fs3g_hpc.model", "fs3g_hpc.transfer.client", "fs3g_hpc.slurm"} <= set(modules)
    client = modules["fs3g_hpc.transfer.client"]
    assert any(imp.module == "botocore.session" for imp in client.imports)  # the checker sees the real import


# ---------------------------------------------------------------------------------------------------------------------
# The checker on a synthetic tree, so a checker that finds nothing cannot pass silently.

def write(root: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return root


CLEAN = {
    "fs3g_hpc/__init__.py": '__version__ = "1"\n',
    "fs3g_hpc/errors.py": "class Fs3gError(Exception): pass\n",
    "fs3g_hpc/model/__init__.py": "",
    "fs3g_hpc/model/keys.py": "from .. import __version__\nfrom ..errors import Fs3gError\nfrom . import sizes\n",
    "fs3g_hpc/model/sizes.py": "import os\nLIMIT = 5\n",
    "fs3g_hpc/transfer/__init__.py": "",
    "fs3g_hpc/transfer/client.py": "import boto3\nimport botocore.exceptions\nfrom s3transfer import manager\n",
    "fs3g_hpc/slurm/__init__.py": "",
    "fs3g_hpc/slurm/engine.py": "import subprocess\nfrom submitit.slurm.slurm import SlurmExecutor\n",
    "fs3g_hpc/localexec.py": "import subprocess\n",
    "fs3g_hpc/cli/__init__.py": "from ..backup import run\n",
    "fs3g_hpc/cli/demo.py": "import subprocess\nfrom ..backup.run import go\n",
    "fs3g_hpc/backup/__init__.py": "from .run import go\n",
    "fs3g_hpc/backup/run.py": "from ..model.sizes import LIMIT\nfrom . import task\ndef go(): pass\n",
    "fs3g_hpc/backup/task.py": "from ..transfer import client\nfrom . import _helpers\n",
    "fs3g_hpc/backup/_helpers.py": "",
    "fs3g_hpc/runs/__init__.py": "",
    "fs3g_hpc/runs/layout.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import shards\n",
    "fs3g_hpc/runs/shards.py": "from . import layout\ndef f():\n    from . import files\n",
    "fs3g_hpc/runs/files.py": "from . import shards\n",
}


def test_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    modules = read_tree(write(tmp_path, CLEAN))
    assert set(modules) >= {"fs3g_hpc", "fs3g_hpc.model.keys", "fs3g_hpc.cli.demo", "fs3g_hpc.runs.files"}
    assert violations(modules) == []


@pytest.mark.parametrize(("rel", "text", "expected"), [
    ("fs3g_hpc/model/sizes.py", "import boto3\n", "fs3g_hpc/model/sizes.py:1: [external] imports boto3"),
    ("fs3g_hpc/backup/task.py", "def f():\n    from botocore.exceptions import ClientError\n",
     "fs3g_hpc/backup/task.py:2: [external] imports botocore.exceptions"),
    ("fs3g_hpc/runs/layout.py", "import s3transfer.manager as m\n", "fs3g_hpc/runs/layout.py:1: [external] imports s3transfer"),
    ("fs3g_hpc/runs/layout.py", "\n\nimport submitit\n", "fs3g_hpc/runs/layout.py:3: [external] imports submitit"),
    ("fs3g_hpc/transfer/client.py", "from submitit import AutoExecutor\n",
     "fs3g_hpc/transfer/client.py:1: [external] imports submitit"),
    ("fs3g_hpc/cli/__init__.py", "import subprocess\n", "fs3g_hpc/cli/__init__.py:1: [external] imports subprocess"),
    ("fs3g_hpc/status.py", "def f():\n    import subprocess\n", "fs3g_hpc/status.py:2: [external] imports subprocess"),
    ("fs3g_hpc/model/keys.py", "from ..config import schema\n",
     "fs3g_hpc/model/keys.py:1: [model] fs3g_hpc.model.keys imports fs3g_hpc.config"),
    ("fs3g_hpc/model/keys.py", "from .. import errors, localexec\n",
     "fs3g_hpc/model/keys.py:1: [model] fs3g_hpc.model.keys imports fs3g_hpc.localexec"),
    ("fs3g_hpc/model/keys.py", "import fs3g_hpc.runs.layout\n",
     "fs3g_hpc/model/keys.py:1: [model] fs3g_hpc.model.keys imports fs3g_hpc.runs.layout"),
    ("fs3g_hpc/model/keys.py", "from .. import CONSTANT\n",
     "fs3g_hpc/model/keys.py:1: [model] fs3g_hpc.model.keys imports fs3g_hpc;"),
    ("fs3g_hpc/__init__.py", "from .errors import Fs3gError\n", "fs3g_hpc/__init__.py:1: [root]"),
    ("fs3g_hpc/backup/run.py", "from ..model.sizes import _round\n",
     "fs3g_hpc/backup/run.py:1: [private] imports _round from fs3g_hpc.model.sizes"),
    ("fs3g_hpc/backup/run.py", "from ..model import sizes\nx = sizes._round(1)\n",
     "fs3g_hpc/backup/run.py:2: [private] uses fs3g_hpc.model.sizes._round"),
    ("fs3g_hpc/backup/run.py", "import fs3g_hpc.model.sizes as s\nx = s._round\n",
     "fs3g_hpc/backup/run.py:2: [private] uses fs3g_hpc.model.sizes._round"),
    ("fs3g_hpc/runs/layout.py", "from ..backup import run\n",
     "fs3g_hpc/runs/layout.py:1: [upward] lower layer fs3g_hpc.runs.layout imports fs3g_hpc.backup.run"),
    ("fs3g_hpc/transfer/client.py", "def f():\n    import fs3g_hpc.cli\n",
     "fs3g_hpc/transfer/client.py:2: [upward] lower layer fs3g_hpc.transfer.client imports fs3g_hpc.cli"),
    ("fs3g_hpc/backup/task.py", "from ..cli import demo\n",
     "fs3g_hpc/backup/task.py:1: [upward] pipeline fs3g_hpc.backup.task imports the CLI (fs3g_hpc.cli.demo)"),
    ("fs3g_hpc/runs/layout.py", "from . import files\n", "[cycle] fs3g_hpc.runs.files <-> fs3g_hpc.runs.layout"),
    ("fs3g_hpc/backup/task.py", "from . import run\n", "[cycle] fs3g_hpc.backup.run <-> fs3g_hpc.backup.task"),
])
def test_checker_finds_each_breach(tmp_path: Path, rel: str, text: str, expected: str) -> None:
    files = dict(CLEAN)
    files[rel] = text
    found = violations(read_tree(write(tmp_path, files)))
    assert any(expected in line for line in found), found
    assert all(line.split(":")[0].endswith(".py") and line.split(":")[1].isdigit() for line in found), found


def test_checker_leaves_lazy_imports_out_of_the_cycle_graph(tmp_path: Path) -> None:
    files = dict(CLEAN, **{"fs3g_hpc/runs/files.py": "def f():\n    from . import shards\n"})
    files["fs3g_hpc/runs/shards.py"] = "from . import files\n"
    assert violations(read_tree(write(tmp_path, files))) == []
