"""Bad input: a ValueError naming the problem and the structure/atom, never a numba traceback.

The regexes are deliberately loose (case-insensitive, key fragments only) so that the wording can
be improved without breaking the tests; what they pin down is *what* is named: the structure
index, the atom index(es), the argument and the nature of the problem.
"""

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
    with pytest.raises(ValueError, match=r"(?i)structure 1\b.*atom.*\b(3\b.*\b5|5\b.*\b3)\b.*overlap") as info:
        hq.get_descriptors([good(), bad])
    assert "0.05" in str(info.value)  # the distance is reported


def test_overlapping_atoms_in_a_molecule_and_a_slab():
    mol = testing.molecule(n_atoms=10, seed=1)
    mol.positions[9] = mol.positions[2] + [0.0, 0.03, 0.0]
    with pytest.raises(ValueError, match=r"(?i)structure 0\b.*atom.*\b(2\b.*\b9|9\b.*\b2)\b.*overlap"):
        hq.get_descriptors(mol)
    # atoms overlapping only through a periodic image (positions one lattice vector apart)
    slab = testing.surface_slab(size=(2, 2, 2), seed=2)
    slab.positions[4] = slab.positions[1] + slab.cell.array[0] + [0.02, 0.0, 0.0]
    with pytest.raises(ValueError, match=r"(?i)structure 2\b.*atom.*\b(1\b.*\b4|4\b.*\b1)\b.*overlap"):
        hq.get_descriptors([good(), good(), slab])


def test_overlap_with_own_image():
    tiny = Atoms("Cu", positions=[[0, 0, 0]], cell=[0.05, 3.0, 3.0], pbc=True)
    with pytest.raises(ValueError, match=r"(?i)structure 0\b.*atom 0\b.*own.*image"):
        hq.get_descriptors(tiny)


def test_pbc_without_cell():
    a = Atoms("Cu2", positions=[[0, 0, 0], [2, 0, 0]], pbc=True)
    with pytest.raises(ValueError, match=r"(?i)structure 0\b.*pbc.*axis 0\b.*cell"):
        hq.get_descriptors(a)
    slab = testing.surface_slab(size=(2, 2, 2))
    cell = slab.cell.array.copy()
    cell[1] = 0.0
    slab.cell = cell
    with pytest.raises(ValueError, match=r"(?i)structure 2\b.*pbc.*axis 1\b"):
        hq.get_descriptors([good(), good(), slab])


def test_zero_cell_along_non_periodic_axis_is_fine():
    slab = testing.surface_slab(size=(2, 2, 2))
    cell = slab.cell.array.copy()
    cell[2] = 0.0
    slab.cell = cell
    assert np.isfinite(hq.get_descriptors(slab)).all()


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_position(value):
    bad = good()
    bad.positions[7, 1] = value
    with pytest.raises(ValueError, match=r"(?i)structure 0\b.*atom 7\b.*(finite|nan|inf)"):
        hq.get_descriptors(bad)
    with pytest.raises(ValueError, match=r"(?i)structure 1\b.*atom 7\b"):
        hq.get_descriptors([good(), bad])


@pytest.mark.parametrize("k", [1, 0, -3, 2.5, "32", True])
def test_bad_k(k):
    with pytest.raises(ValueError, match=r"(?i)\bk\b.*(integer|>= ?2|at least 2)"):
        hq.get_descriptors(good(), k=k)


@pytest.mark.parametrize("cutoff", [0.0, -1.0, np.nan, np.inf, "x"])
def test_bad_cutoff(cutoff):
    with pytest.raises(ValueError, match=r"(?i)cutoff.*positive"):
        hq.get_descriptors(good(), cutoff=cutoff)


def test_bad_parameters_multicomponent():
    alloy = testing.multicomponent("rocksalt", ("Na", "Cl"), size=(1, 1, 1))
    with pytest.raises(ValueError, match=r"(?i)\bk\b"):
        hq.get_descriptors_multicomponent(alloy, k=1)
    with pytest.raises(ValueError, match=r"(?i)cutoff"):
        hq.get_descriptors_multicomponent(alloy, cutoff=-2.0)


def test_empty_inputs():
    with pytest.raises(ValueError, match=r"(?i)no structures|empty"):
        hq.get_descriptors([])
    with pytest.raises(ValueError, match=r"(?i)structure 1\b.*atoms"):
        hq.get_descriptors([good(), np.zeros((3, 3))])
    with pytest.raises(ValueError, match=r"(?i)\bx\b.*empty"):
        hq.entropy(np.zeros((0, 63)))
    with pytest.raises(ValueError, match=r"(?i)\bx\b.*empty"):
        hq.diversity(np.zeros((0, 63)))
    with pytest.raises(ValueError, match=r"(?i)\by\b.*empty"):
        hq.delta_entropy(np.zeros((0, 63)), np.ones((4, 63)))
    with pytest.raises(ValueError, match=r"(?i)\bx\b.*empty"):
        hq.delta_entropy(np.ones((4, 63)), np.zeros((0, 63)))
    with pytest.raises(ValueError, match=r"(?i)\bx\b.*empty"):
        hq.overlap(np.ones((4, 63)), np.zeros((0, 63)))


def test_metric_inputs():
    x = testing.random_descriptors(20, seed=1)
    with pytest.raises(ValueError, match=r"(?i)width.*\by\b.*10.*\bx\b.*63"):
        hq.delta_entropy(np.ones((3, 10)), x)
    with pytest.raises(ValueError, match=r"(?i)width.*10.*63"):
        hq.overlap(np.ones((3, 10)), x)
    with pytest.raises(ValueError, match=r"(?i)\bx\b.*(2-?d|shape)"):
        hq.entropy(np.ones((2, 3, 63)))  # (a 1-D array is one environment)
    for h in (0.0, -0.01, [0.01, -1], np.nan):
        with pytest.raises(ValueError, match=r"(?i)bandwidth.*positive"):
            hq.entropy(x, h=h)
    with pytest.raises(ValueError, match=r"(?i)bandwidth.*positive"):
        hq.delta_entropy(x[:3], x, h=-0.015)
    with pytest.raises(ValueError, match=r"(?i)bandwidth.*positive"):
        hq.diversity(x, h=0.0)
    bad = x.copy()
    bad[4, 2] = np.nan
    with pytest.raises(ValueError, match=r"(?i)\bx\b.*row 4\b.*finite"):
        hq.entropy(bad)
    with pytest.raises(ValueError, match=r"(?i)\by\b.*row 4\b.*finite"):
        hq.delta_entropy(bad, x)
    with pytest.raises(ValueError, match=r"(?i)volume.*positive"):
        hq.get_bandwidth(-1.0)


def test_store_parameter_mismatch(tmp_path):
    from hpcquests.io.store import open_store

    x = hq.get_descriptors(good())
    path = tmp_path / "ref.h5"
    write_store(path, x, [0, len(x)], k=32, cutoff=5.0, species=["Ta"])
    with open_store(path) as s:
        s.check_compatible(k=32, cutoff=5.0, species=["Ta"])
        with pytest.raises(ValueError, match=r"ref\.h5.*k=32.*k=16"):
            s.check_compatible(k=16)
        with pytest.raises(ValueError, match=r"ref\.h5.*cutoff=4\.5"):
            s.check_compatible(cutoff=4.5)
        with pytest.raises(ValueError, match=r"species"):
            s.check_compatible(species=["W"])


def test_species_outside_requested():
    alloy = testing.multicomponent("rocksalt", ("Na", "Cl"), size=(1, 1, 1))
    with pytest.raises(ValueError, match=r"(?i)structure 0\b.*species.*Na.*not in.*requested"):
        hq.get_descriptors_multicomponent(alloy, species=["Cl", "K"])
