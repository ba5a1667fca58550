"""Distributed greedy MSC: 1, 2, 3 and 4 ranks pick bitwise the same structures with bitwise the
same scores as the serial run (and the brute force in tests/unit/test_msc.py)."""

import json
import textwrap

import numpy as np
import pytest

from hpcquests.compress.msc import msc

from .util import RANK_COUNTS, run_mpi

pytestmark = pytest.mark.mpi

SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    from hpcquests.parallel import get_comm
    from hpcquests.distributed.drivers import local_structure_range
    from hpcquests.compress.msc import distributed_msc

    conditional = sys.argv[1] == "conditional"
    backend = "cpu"
    if len(sys.argv) > 2:  # an eager kernel backend in float32: its argmax certified exactly
        from hpcquests.kernels.cpu_backend import CpuBackend
        from hpcquests.kernels.gpu import GpuBackend
        backend = {"cpu32": CpuBackend("float32"),
                   "gpu32": GpuBackend(xp=np, precision="float32", query_block=30, ref_block=40)}[sys.argv[2]]
    rng = np.random.default_rng(11)
    sizes = rng.integers(3, 40, size=37)            # uneven structures: uneven partitions
    descs = [rng.normal(scale=0.04, size=(int(n), 9)) + 0.03 * (i % 5) for i, n in enumerate(sizes)]
    descs[20] = descs[7].copy()                      # an exact tie, decided by the lowest index
    sizes = np.array([len(d) for d in descs])
    ref = rng.normal(scale=0.04, size=(50, 9)) if conditional else None
    comm = get_comm()
    lo, hi = local_structure_range(comm, sizes)
    x = np.concatenate(descs[lo:hi]) if hi > lo else np.zeros((0, 9))
    off = np.concatenate([[0], np.cumsum(sizes[lo:hi])]).astype(np.int64)
    res = distributed_msc(comm, x, off, lo, [5, 0.5, 1.0], reference=ref, backend=backend)
    if comm.rank == 0:
        print(json.dumps({"order": res.order, "scores": [float(v).hex() for v in res.scores],
                          "entropies": [float(v).hex() for v in res.entropies], "sizes": res.extra["sizes"],
                          "ranks": comm.size, "pairs": res.kernel_pairs}))
''')


def serial(conditional):
    rng = np.random.default_rng(11)
    sizes = rng.integers(3, 40, size=37)
    descs = [rng.normal(scale=0.04, size=(int(n), 9)) + 0.03 * (i % 5) for i, n in enumerate(sizes)]
    descs[20] = descs[7].copy()
    ref = rng.normal(scale=0.04, size=(50, 9)) if conditional else None
    return msc(descs, [5, 0.5, 1.0], reference=ref, details=True)


@pytest.fixture(scope="module")
def script(tmp_path_factory):
    p = tmp_path_factory.mktemp("msc") / "msc_mpi.py"
    p.write_text(SCRIPT)
    return p


@pytest.mark.parametrize("lookahead", ["on", "off"])
@pytest.mark.parametrize("mode", ["plain", "conditional"])
@pytest.mark.parametrize("n", RANK_COUNTS)
def test_same_selection_on_any_rank_count(script, n, mode, lookahead, monkeypatch):
    # look-ahead (work while waiting for the other ranks) changes which work is done when,
    # never a value: forced on and off on every rank count
    monkeypatch.setenv("HPCQUESTS_MSC_LOOKAHEAD", lookahead)
    out = run_mpi(n, [script, mode], timeout=180)
    assert out.returncode == 0, out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
    assert len(lines) == 1, out.stdout
    got = json.loads(lines[0])
    ref = serial(mode == "conditional")
    assert got["ranks"] == n
    assert got["order"] == ref.order
    assert got["scores"] == [float(v).hex() for v in ref.scores]  # bitwise
    assert got["entropies"] == [float(v).hex() for v in ref.entropies]
    assert got["sizes"] == [5, 19, 37]
    if mode == "plain":
        assert got["order"].index(7) < got["order"].index(20)


@pytest.mark.parametrize("backend", ["cpu32", "gpu32"])
@pytest.mark.parametrize("mode", ["plain", "conditional"])
@pytest.mark.parametrize("n", RANK_COUNTS)
def test_float32_backend_picks_the_float64_selection(script, n, mode, backend):
    """A float32 eager backend (the CPU's float32 kernel, or the GPU twin on numpy) picks the
    float64 lazy greedy's structures with its scores, bit for bit, the exact tie included."""
    out = run_mpi(n, [script, mode, backend], timeout=180)
    assert out.returncode == 0, out.stderr
    got = json.loads([ln for ln in out.stdout.splitlines() if ln.startswith("{")][0])
    ref = serial(mode == "conditional")
    assert got["order"] == ref.order
    assert got["scores"] == [float(v).hex() for v in ref.scores]
