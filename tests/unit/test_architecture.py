"""The architecture's rules, checked on the source: one package owns MPI, arrows point down.

- ``lint-imports`` keeps the contracts of ``pyproject.toml`` ([tool.importlinter]): the layers,
  mpi4py imported by ``hpcquests.parallel`` only, no import cycle inside any package.
- An AST scan finds no raw MPI call (``.Allreduce(``, ``.bcast(``, ``.Alltoallv(``, ...) and no
  ``MPI`` name outside ``hpcquests/parallel``: drivers and applications use the communicators'
  named operations.
- Both checks fail when a violation is planted in a copy of the package (so they can fail).
"""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MPI_PACKAGE = "parallel"

#: mpi4py communicator and request methods that never mean anything else in this code base
RAW_MPI_CALLS = {
    "Allreduce", "allreduce", "Bcast", "bcast", "Alltoall", "alltoall", "Alltoallv", "Alltoallw", "Allgather",
    "allgather", "Allgatherv", "Gather", "gather", "Gatherv", "Scatter", "scatter", "Scatterv", "Reduce",
    "Reduce_scatter", "Reduce_scatter_block", "Sendrecv", "sendrecv", "Send", "Recv", "Isend", "isend", "Irecv",
    "irecv", "Ibarrier", "Iallreduce", "Ibcast", "Iallgather", "Ialltoall", "Ialltoallv", "Barrier", "barrier",
    "Split", "Split_type", "Dup", "Free", "Abort", "Scan", "Exscan", "exscan", "Probe", "Iprobe", "Waitall",
    "Waitany", "Get_rank", "Get_size", "Create_contiguous",
}
#: names that are MPI calls only on a communicator (numpy ufuncs have ``.reduce``, the domain
#: exchange has ``.send``): flagged when the receiver is named like one
AMBIGUOUS_CALLS = {"reduce", "send", "recv", "scan", "wait", "waitall", "test"}
COMM_NAMES = ("comm", "world", "raw", "mpi_comm", "node")


def _receiver_name(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return node.attr
    return ""


def raw_mpi_uses(package_dir: Path) -> list[str]:
    """``file:line: what`` for every raw MPI call, mpi4py import or ``MPI`` name outside the MPI
    package of the package at ``package_dir``."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir)
        if rel.parts[0] == MPI_PACKAGE:
            continue
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            where = f"{package_dir.name}/{rel}:{getattr(node, 'lineno', 0)}"
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                name = node.func.attr
                receiver = _receiver_name(node.func.value).lower()
                if name in RAW_MPI_CALLS or (name in AMBIGUOUS_CALLS and receiver.endswith(COMM_NAMES)):
                    found.append(f"{where}: .{name}(")
            elif isinstance(node, ast.Import) and any(a.name.split(".")[0] == "mpi4py" for a in node.names):
                found.append(f"{where}: import mpi4py")
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "mpi4py":
                found.append(f"{where}: from mpi4py import")
            elif isinstance(node, ast.Name) and node.id == "MPI":
                found.append(f"{where}: MPI")
    return found


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    """``lint-imports`` on the package under ``root`` (its pyproject.toml's contracts)."""
    exe = Path(sys.executable).parent / "lint-imports"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                                                                 "lint_imports_command()"]
    env = dict(os.environ, PYTHONPATH=str(root))
    return subprocess.run(cmd + ["--no-cache"], cwd=root, env=env, capture_output=True, text=True, timeout=300)


def test_import_contracts_are_kept():
    out = lint_imports(ROOT)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert "3 kept, 0 broken" in out.stdout


def test_no_raw_mpi_outside_the_mpi_package():
    assert raw_mpi_uses(ROOT / "hpcquests") == []


def test_the_mpi_package_is_where_the_raw_calls_are():
    """The scan sees raw calls where they are allowed (so it is not blind)."""
    inside = []
    for path in (ROOT / "hpcquests" / MPI_PACKAGE).glob("*.py"):
        tree = ast.parse(path.read_text())
        inside += [n.func.attr for n in ast.walk(tree)
                   if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in RAW_MPI_CALLS]
    assert {"Allreduce", "bcast", "Alltoallv", "Allgatherv", "Isend", "Irecv", "Ibarrier"} <= set(inside)


@pytest.fixture
def package_copy(tmp_path):
    """A copy of the package and its contracts, to plant violations in."""
    shutil.copytree(ROOT / "hpcquests", tmp_path / "hpcquests",
                    ignore=shutil.ignore_patterns("__pycache__", "*.nbi", "*.nbc"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def _append(path: Path, text: str):
    path.write_text(path.read_text() + "\n\n" + text + "\n")


@pytest.mark.parametrize("planted, broken", [
    # an upward import (a building block importing the CLI), lazily inside a function
    ("io/store.py", "def _planted():\n    from ..cli import main\n    return main"),
    # mpi4py outside the MPI package
    ("metrics.py", "def _planted():\n    from mpi4py import MPI\n    return MPI"),
    # an import cycle inside a package (chunks is imported by store)
    ("io/chunks.py", "def _planted():\n    from .store import open_store\n    return open_store"),
])
def test_contracts_fail_on_a_planted_violation(package_copy, planted, broken):
    assert lint_imports(package_copy).returncode == 0  # the copy itself is clean
    _append(package_copy / "hpcquests" / planted, broken)
    out = lint_imports(package_copy)
    assert out.returncode != 0 and "BROKEN" in out.stdout, out.stdout[-3000:]


@pytest.mark.parametrize("call", ["comm.Allreduce(a, b)", "self.comm.bcast(x, root=0)", "comm.Alltoallv(s, r)",
                                  "world.reduce(x)", "MPI.COMM_WORLD.rank"])
def test_ast_check_fails_on_a_planted_raw_call(package_copy, call):
    _append(package_copy / "hpcquests" / "uq" / "stats.py", f"def _planted(comm, world, a, b, x, s, r, MPI):\n"
                                                             f"    return {call}")
    found = raw_mpi_uses(package_copy / "hpcquests")
    assert found and all(f.startswith("hpcquests/uq/stats.py:") for f in found), found


def _is_jit(decorator: ast.AST) -> bool:
    target = decorator.func if isinstance(decorator, ast.Call) else decorator
    name = target.attr if isinstance(target, ast.Attribute) else getattr(target, "id", "")
    return name in ("njit", "jit", "vectorize", "guvectorize", "cfunc", "stencil")


def jit_outside_kernels(package_dir: Path) -> list[str]:
    """``file:line name`` of every numba-compiled function outside ``kernels/``."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir)
        if rel.parts[0] == "kernels":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(_is_jit(d) for d in node.decorator_list):
                found.append(f"{rel}:{node.lineno} {node.name}")
    return found


def test_numba_kernels_live_in_one_home():
    assert jit_outside_kernels(ROOT / "hpcquests") == []
    kernels = [p.name for p in (ROOT / "hpcquests" / "kernels").glob("*.py")
               if any(_is_jit(d) for n in ast.walk(ast.parse(p.read_text())) if isinstance(n, ast.FunctionDef)
                      for d in n.decorator_list)]
    assert {"cpu.py", "descriptors.py", "neighbors.py", "greedy.py", "domains.py", "atom_lines.py"} <= set(kernels)


def test_jit_check_fails_on_a_planted_kernel(package_copy):
    _append(package_copy / "hpcquests" / "metrics.py", "import numba\n\n\n@numba.njit(cache=True)\ndef _planted(x):\n"
                                                      "    return x + 1")
    assert jit_outside_kernels(package_copy / "hpcquests") == ["metrics.py:" + str(
        (package_copy / "hpcquests" / "metrics.py").read_text().splitlines().index("def _planted(x):") + 1)
        + " _planted"]


#: numba kernels allowed over the parameter limit: none (the lazy greedy's per-environment state
#: is two 2-D arrays, its per-structure calls take tuples). The list may only shrink.
JIT_PARAMETER_EXCEPTIONS: set = set()
MAX_LINES, MAX_PARAMETERS = 80, 12


def function_size_violations(package_dir: Path) -> list[str]:
    """Functions over 80 lines or 12 parameters (outside numba kernels), numba kernels over 12
    parameters (a tuple argument counts as one); ``self``/``cls`` not counted."""
    found = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir)
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            a = node.args
            names = [p.arg for p in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
            n_params = len(names) - (names[:1] in (["self"], ["cls"])) + bool(a.vararg) + bool(a.kwarg)
            lines = node.end_lineno - node.lineno + 1
            if any(_is_jit(d) for d in node.decorator_list):
                if n_params > MAX_PARAMETERS and node.name not in JIT_PARAMETER_EXCEPTIONS:
                    found.append(f"{rel}:{node.lineno} {node.name}: numba kernel with {n_params} parameters")
                continue
            if lines > MAX_LINES:
                found.append(f"{rel}:{node.lineno} {node.name}: {lines} lines")
            if n_params > MAX_PARAMETERS:
                found.append(f"{rel}:{node.lineno} {node.name}: {n_params} parameters")
    return found


def test_functions_are_small():
    assert function_size_violations(ROOT / "hpcquests") == []


def test_the_jit_exceptions_are_still_needed():
    """An exception that no longer applies must be removed from the list (it only shrinks)."""
    over = set()
    for path in (ROOT / "hpcquests" / "kernels").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef) and any(_is_jit(d) for d in node.decorator_list):
                a = node.args
                if len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) > MAX_PARAMETERS:
                    over.add(node.name)
    assert over == JIT_PARAMETER_EXCEPTIONS


def test_size_check_fails_on_planted_functions(package_copy):
    long_body = "\n".join(f"    x{i} = {i}" for i in range(85))
    _append(package_copy / "hpcquests" / "metrics.py",
            f"def _planted_long():\n{long_body}\n    return 0\n\n\n"
            "def _planted_wide(a, b, c, d, e, f, g, h, i, j, k, l, m):\n    return a\n\n\n"
            "import numba\n\n\n@numba.njit\ndef _planted_kernel(a, b, c, d, e, f, g, h, i, j, k, l, m):\n    return a")
    found = function_size_violations(package_copy / "hpcquests")
    assert [f.split(" ", 1)[1] for f in found] == ["_planted_long: 87 lines", "_planted_wide: 13 parameters",
                                                   "_planted_kernel: numba kernel with 13 parameters"], found
