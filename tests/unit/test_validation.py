"""Bad input: a ValueError naming the problem and the structure/atom, never a numba traceback."""

import numpy as np
import pytest
from ase import Atoms

import hpcquests as hq
from hpcquests import testing
from hpcquests.io.store import write_store


def good():
    return testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), seed=0)


def test_overlapping_atoms_named():
    bad = good()
    bad.positions[5] = bad.positions[3] + [0.05, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"structure 1: atom (3|5) and atom (5|3) are 0\.05 Å apart.*overlapping"):
        hq.get_descriptors([good(), bad])


def test_overlap_with_own_image():
    tiny = Atoms("Cu", positions=[[0, 0, 0]], cell=[0.05, 3.0, 3.0], pbc=True)
    with pytest.raises(ValueError, match=r"structure 0: atom 0 and its own periodic image"):
        hq.get_descriptors(tiny)


def test_pbc_without_cell():
    a = Atoms("Cu2", positions=[[0, 0, 0], [2, 0, 0]], pbc=True)
    with pytest.raises(ValueError, match=r"structure 0: pbc is set along axis 0 but the cell vector is zero"):
        hq.get_descriptors(a)
    slab = testing.surface_slab(size=(2, 2, 2))
    cell = slab.cell.array.copy()
    cell[1] = 0.0
    slab.cell = cell
    with pytest.raises(ValueError, match=r"structure 2: pbc is set along axis 1"):
        hq.get_descriptors([good(), good(), slab])


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_position(value):
    bad = good()
    bad.positions[7, 1] = value
    with pytest.raises(ValueError, match=r"structure 0, atom 7: position is not finite"):
        hq.get_descriptors(bad)


@pytest.mark.parametrize("k", [1, 0, -3, 2.5, "32", True])
def test_bad_k(k):
    with pytest.raises(ValueError, match=r"k must be an integer >= 2"):
        hq.get_descriptors(good(), k=k)


@pytest.mark.parametrize("cutoff", [0.0, -1.0, np.nan, np.inf, "x"])
def test_bad_cutoff(cutoff):
    with pytest.raises(ValueError, match=r"cutoff must be a positive number"):
        hq.get_descriptors(good(), cutoff=cutoff)


def test_empty_inputs():
    with pytest.raises(ValueError, match=r"no structures given"):
        hq.get_descriptors([])
    with pytest.raises(ValueError, match=r"structure 1: expected ase.Atoms"):
        hq.get_descriptors([good(), np.zeros((3, 3))])
    with pytest.raises(ValueError, match=r"x is empty"):
        hq.entropy(np.zeros((0, 63)))
    with pytest.raises(ValueError, match=r"y is empty"):
        hq.delta_entropy(np.zeros((0, 63)), np.ones((4, 63)))


def test_metric_inputs():
    x = testing.random_descriptors(20, seed=1)
    with pytest.raises(ValueError, match=r"descriptor widths differ: y has 10 features, x has 63"):
        hq.delta_entropy(np.ones((3, 10)), x)
    with pytest.raises(ValueError, match=r"bandwidth h must be positive"):
        hq.entropy(x, h=0.0)
    with pytest.raises(ValueError, match=r"bandwidth h must be positive"):
        hq.entropy(x, h=[0.01, -1])
    bad = x.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"x row 4 is not finite"):
        hq.entropy(bad)
    with pytest.raises(ValueError, match=r"volume per atom must be positive"):
        hq.get_bandwidth(-1.0)


def test_store_parameter_mismatch(tmp_path):
    from hpcquests.io.store import open_store

    x = hq.get_descriptors(good())
    path = tmp_path / "ref.h5"
    write_store(path, x, [0, len(x)], k=32, cutoff=5.0, species=["Ta"])
    with open_store(path) as s:
        s.check_compatible(k=32, cutoff=5.0, species=["Ta"])
        with pytest.raises(ValueError, match=r"ref.h5 was built with k=32, cutoff=5.0.*but k=16 was asked for"):
            s.check_compatible(k=16)
        with pytest.raises(ValueError, match=r"but cutoff=4.5 was asked for"):
            s.check_compatible(cutoff=4.5)
        with pytest.raises(ValueError, match=r"species="):
            s.check_compatible(species=["W"])


def test_species_outside_requested():
    alloy = testing.multicomponent("rocksalt", ("Na", "Cl"), size=(1, 1, 1))
    with pytest.raises(ValueError, match=r"structure 0: species \['Na'\] not in the requested species"):
        hq.get_descriptors_multicomponent(alloy, species=["Cl", "K"])
