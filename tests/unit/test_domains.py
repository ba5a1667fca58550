"""Domain decomposition with halos gives bitwise the serial descriptors (no MPI: every domain's
point set is assembled from the exchange plan in-process)."""

import numpy as np
import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.descriptors import point_set_descriptors
from hpcquests.distributed.domains import grid_shape, plan_exchange
from hpcquests.kernels.domains import _image_points


def domain_descriptors(atoms, shape, k=32, cutoff=5.0):
    pos = atoms.positions
    plan = plan_exchange(pos, atoms.cell.array, atoms.pbc, cutoff, shape)
    a = plan["atom"]
    pts = _image_points(pos[a], plan["wrap"][a], plan["shift"], plan["basis"])
    shift_abs = plan["wrap"][a] + plan["shift"]
    out = np.full((len(atoms), 2 * k - 1), np.nan)
    owners = np.zeros(len(atoms), dtype=int)
    for dom in range(int(np.prod(shape))):
        sel = plan["dest"] == dom
        own = sel & plan["owned"]
        halo = sel & ~plan["owned"]
        idx = np.concatenate([np.nonzero(own)[0], np.nonzero(halo)[0]])
        n_own = int(own.sum())
        x = np.empty((n_own, 2 * k - 1))
        point_set_descriptors(pts[idx], a[idx], shift_abs[idx], n_own, k, cutoff, out=x)
        out[a[idx[:n_own]]] = x
        owners[a[idx[:n_own]]] += 1
    assert (owners == 1).all(), "every atom owned exactly once"
    return out


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 1, 1), (1, 3, 1), (2, 2, 1), (2, 2, 2), (4, 1, 2)])
@pytest.mark.parametrize("name,make", [
    ("bcc", lambda: testing.perturbed_crystal("bcc", "Ta", size=(5, 5, 5), seed=1)),
    ("triclinic", lambda: testing.triclinic_crystal("Cu", size=(4, 4, 4), seed=2)),
    ("perfect", lambda: testing.perturbed_crystal("bcc", "Ta", size=(4, 4, 4), noise=0.0)),
    ("slab", lambda: testing.surface_slab("fcc", "Cu", size=(4, 4, 3), seed=3)),
    ("slab_boxed_open_axis", lambda: testing.surface_slab("fcc", "Cu", size=(3, 3, 5), vacuum=3.0, seed=3)),
    ("molecule_in_box", lambda: _boxed(testing.molecule(n_atoms=40, seed=6))),
    ("unwrapped", lambda: _unwrapped(testing.triclinic_crystal("Cu", size=(3, 3, 3), seed=4))),
])
def test_domains_bitwise_equal_serial(name, make, shape):
    atoms = make()
    assert np.array_equal(domain_descriptors(atoms, shape), hq.get_descriptors(atoms))


def _boxed(atoms):
    atoms.center(vacuum=2.0)  # a real box (as LAMMPS always has) with open boundaries
    return atoms


def _unwrapped(atoms):
    rng = np.random.default_rng(0)
    atoms.positions += rng.integers(-2, 3, size=(len(atoms), 3)) @ atoms.cell.array
    return atoms


def test_small_cell_many_images():
    atoms = testing.small_cell("Cu", "fcc", seed=5)
    assert np.array_equal(domain_descriptors(atoms, (2, 1, 1)), hq.get_descriptors(atoms))


def test_grid_shape():
    assert grid_shape(1, [10, 10, 10]) == (1, 1, 1)
    assert grid_shape(8, [10, 10, 10]) == (2, 2, 2)
    assert grid_shape(4, [100, 10, 10]) == (4, 1, 1)
    assert grid_shape(6, [30, 20, 10]) == (3, 2, 1)
    assert grid_shape(4, [10, 10, 1000], cuttable=(True, True, False)) == (2, 2, 1)
    assert grid_shape(3, [10, 10, 10], cuttable=(False, False, False)) == (1, 1, 1)
    with pytest.raises(ValueError):
        grid_shape(0, [1, 1, 1])


def test_query_ranges_reassemble_full_result():
    from hpcquests.descriptors import BinnedPoints
    from hpcquests.kernels.neighbors import periodic_points

    atoms = testing.perturbed_crystal("bcc", "Ta", size=(6, 6, 6), seed=9)
    pts, atom, shift = periodic_points(atoms.positions, atoms.cell.array, atoms.pbc, 5.0)
    binned = BinnedPoints(pts, atom, shift, 5.0)
    n = len(atoms)
    chunks = [binned.descriptors(a, min(a + 97, n), 32)[0] for a in range(0, n, 97)]
    assert np.array_equal(np.concatenate(chunks), hq.get_descriptors(atoms))


@pytest.mark.parametrize("name,make", [
    ("bcc", lambda: testing.perturbed_crystal("bcc", "Ta", size=(5, 5, 5), seed=1)),
    ("slab_boxed_open_axis", lambda: testing.surface_slab("fcc", "Cu", size=(3, 3, 5), vacuum=3.0, seed=3)),
    ("unwrapped", lambda: _unwrapped(testing.triclinic_crystal("Cu", size=(3, 3, 3), seed=4))),
])
def test_streamed_exchange_equals_one_block(name, make):
    """DomainExchange fed in blocks (counts pass, then data pass into preallocated arrays) gives
    exactly the one-block exchange: same points, order, shifts (narrowed) and payload."""
    from hpcquests.parallel import SerialComm
    from hpcquests.distributed.domains import DomainExchange, exchange_domains

    atoms = make()
    n = len(atoms)
    perm = np.random.default_rng(3).permutation(n)
    pos = atoms.positions[perm]
    one = exchange_domains(SerialComm(), pos, perm, atoms.cell.array, atoms.pbc, 5.0, payload={"id": perm + 1})
    for n_blocks in (2, 7, n + 3):  # n + 3: empty blocks too
        blocks = np.array_split(np.arange(n), n_blocks)
        ex = DomainExchange(SerialComm(), atoms.cell.array, atoms.pbc, 5.0)
        for b in blocks:
            ex.count(pos[b])
        ex.allocate({"id": np.int64})
        assert ex.rounds == n_blocks
        for b in blocks:
            ex.send(pos[b], perm[b], {"id": perm[b] + 1})
        got = ex.finish()
        assert got.keys() == one.keys()
        for key in one:
            assert np.array_equal(got[key], one[key]), key
    assert one["shift"].dtype == np.int8
    # the point set gives the serial descriptors
    x = np.empty((one["n_owned"], 63))
    point_set_descriptors(one["pts"], one["atom"], one["shift"], one["n_owned"], 32, 5.0, out=x)
    full = np.empty_like(x)
    full[one["atom"][:one["n_owned"]]] = x
    assert np.array_equal(full, hq.get_descriptors(atoms))


def test_shift_dtype_and_far_unwrapped_atoms():
    from hpcquests.parallel import SerialComm
    from hpcquests.distributed.domains import exchange_domains, shift_dtype

    assert shift_dtype(0) == np.int8 and shift_dtype(127) == np.int8
    assert shift_dtype(128) == np.int16 and shift_dtype(40_000) == np.int32 and shift_dtype(2**40) == np.int64
    atoms = testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), seed=2)
    atoms.positions[::5] += 300 * atoms.cell.array[0]  # unwrapped 300 cells away: int16 shifts
    n = len(atoms)
    dom = exchange_domains(SerialComm(), atoms.positions, np.arange(n), atoms.cell.array, atoms.pbc, 5.0)
    assert dom["shift"].dtype == np.int16 and np.abs(dom["shift"]).max() >= 300
    x = np.empty((n, 63))
    point_set_descriptors(dom["pts"], dom["atom"], dom["shift"], dom["n_owned"], 32, 5.0, out=x)
    full = np.empty_like(x)
    full[dom["atom"][:n]] = x
    assert np.array_equal(full, hq.get_descriptors(atoms))


def test_exchange_counts_must_match():
    from hpcquests.parallel import SerialComm
    from hpcquests.distributed.domains import DomainExchange

    atoms = testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), seed=2)
    ex = DomainExchange(SerialComm(), atoms.cell.array, atoms.pbc, 5.0)
    with pytest.raises(RuntimeError):
        ex.send(atoms.positions, np.arange(len(atoms)))
    ex.count(atoms.positions[:10])
    ex.allocate()
    with pytest.raises(ValueError, match="more atoms arrived"):
        ex.send(atoms.positions, np.arange(len(atoms)))
    ex = DomainExchange(SerialComm(), atoms.cell.array, atoms.pbc, 5.0)
    ex.count(atoms.positions)
    ex.allocate()
    ex.send(atoms.positions[:10], np.arange(10))
    with pytest.raises(ValueError, match="fewer atoms arrived"):
        ex.finish()
