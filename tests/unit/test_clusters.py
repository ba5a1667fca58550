"""hpcquests.clusters: partitions equal to scipy's connected components on a brute-force periodic
graph (every pair, every image), orthogonal and triclinic cells, clusters wrapping around the
box, the label order, and bad input."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

import hpcquests as hq
from hpcquests import testing
from hpcquests.cluster_graph import cluster_sizes


def brute_labels(positions, cell, pbc, mask, cutoff, ids=None):
    """Every pair of marked atoms, every image shift in [-3, 3]^3 along periodic axes (the
    positions are up to one cell outside the home cell)."""
    n = len(positions)
    ids = np.arange(n) if ids is None else np.asarray(ids)
    nodes = np.flatnonzero(mask)
    ranges = [range(-3, 4) if p else range(1) for p in pbc]
    shifts = np.array(list(itertools.product(*ranges))) @ np.asarray(cell)
    rows, cols = [], []
    for a in range(len(nodes)):
        for b in range(a + 1, len(nodes)):
            d = positions[nodes[b]] - positions[nodes[a]] + shifts
            if (np.sqrt((d * d).sum(axis=1)) <= cutoff).any():
                rows.append(a)
                cols.append(b)
    g = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(nodes), len(nodes)))
    _, comp = connected_components(g, directed=False)
    # canonical order: decreasing size, ties by the smallest id
    groups = {}
    for k, c in enumerate(comp):
        groups.setdefault(c, []).append(nodes[k])
    order = sorted(groups.values(), key=lambda g: (-len(g), min(ids[i] for i in g)))
    labels = np.zeros(n, dtype=np.int64)
    for lab, g in enumerate(order, 1):
        labels[g] = lab
    return labels


def _case(kind, seed, fraction=0.35):
    rng = np.random.default_rng(seed)
    if kind == "orthogonal":
        a = testing.perturbed_crystal("fcc", "Cu", size=(3, 3, 3), noise=0.1, seed=seed)
    elif kind == "triclinic":
        a = testing.triclinic_crystal("Ta", size=(3, 3, 3), noise=0.1, shear=(0.3, -0.2, 0.25), seed=seed)
    else:  # a slab: periodic in x and y only
        a = testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 2), noise=0.1, seed=seed)
        a.pbc = (True, True, False)
    pos = a.positions + rng.normal(scale=0.05, size=a.positions.shape) + rng.integers(-1, 2, (len(a), 1)) * a.cell[0]
    return pos, a.cell[:], a.pbc, rng.random(len(a)) < fraction


@pytest.mark.parametrize("kind", ["orthogonal", "triclinic", "slab"])
@pytest.mark.parametrize("seed", range(3))
def test_partition_equals_brute_force(kind, seed):
    pos, cell, pbc, mask = _case(kind, seed)
    for cutoff in (2.6, 3.0):
        got = hq.clusters(pos, cell, pbc, mask, cutoff)
        assert np.array_equal(got, brute_labels(pos, cell, pbc, mask, cutoff))
        assert (got[~mask] == 0).all() and (got[mask] > 0).all()


def test_a_chain_that_wraps_around_the_box_is_one_cluster():
    cell = np.diag([10.0, 10.0, 10.0])
    x = np.arange(0.5, 10.0, 2.5)  # 4 atoms 2.5 Å apart; the last and the first are 2.5 Å apart across the face
    pos = np.stack([x, np.full(4, 5.0), np.full(4, 5.0)], axis=1)
    mask = np.ones(4, dtype=bool)
    assert hq.clusters(pos, cell, True, mask, 3.0).tolist() == [1, 1, 1, 1]
    mask[1] = False  # the chain is cut once: still one cluster, through the boundary
    assert hq.clusters(pos, cell, True, mask, 3.0).tolist() == [1, 0, 1, 1]
    mask[3] = False  # cut twice: two single atoms, ordered by id
    assert hq.clusters(pos, cell, True, mask, 3.0).tolist() == [1, 0, 2, 0]
    assert hq.clusters(pos, cell, (False, True, True), np.ones(4, bool), 3.0).tolist() == [1, 1, 1, 1]
    assert hq.clusters(pos, cell, True, mask, 3.0, ids=[9, 0, 5, 1]).tolist() == [2, 0, 1, 0]


def test_labels_order_by_size_then_smallest_id():
    cell = np.diag([30.0, 30.0, 30.0])
    blob = lambda c, k: np.array(c) + np.arange(k)[:, None] * np.array([2.0, 0, 0])  # noqa: E731
    pos = np.concatenate([blob([1, 1, 1], 2), blob([1, 10, 1], 3), blob([1, 20, 1], 2)])
    labels = hq.clusters(pos, cell, True, np.ones(len(pos), bool), 3.0)
    assert labels.tolist() == [2, 2, 1, 1, 1, 3, 3]
    assert cluster_sizes(labels).tolist() == [3, 2, 2]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.floats(0.1, 0.9), st.sampled_from(["orthogonal", "triclinic", "slab"]))
def test_generated_partitions_equal_brute_force(seed, fraction, kind):
    pos, cell, pbc, mask = _case(kind, seed, fraction)
    assert np.array_equal(hq.clusters(pos, cell, pbc, mask, 3.0), brute_labels(pos, cell, pbc, mask, 3.0))


@pytest.mark.parametrize("args, message", [
    (dict(positions=np.zeros((3, 2))), "positions must be an"),
    (dict(positions=np.array([[0, 0, np.nan]] * 3)), "positions row 0 is not finite"),
    (dict(mask=np.ones(2, bool)), "mask must be an"),
    (dict(mask=np.ones(3)), "mask must be an"),
    (dict(cutoff=0.0), "cutoff must be a positive distance"),
    (dict(cell=np.eye(2)), "cell must be a finite"),
])
def test_bad_input(args, message):
    kw = dict(positions=np.zeros((3, 3)) + np.arange(3)[:, None], cell=np.eye(3) * 5, pbc=True,
              mask=np.ones(3, bool), cutoff=3.0)
    kw.update(args)
    with pytest.raises(ValueError, match=message):
        hq.clusters(**kw)


@pytest.mark.parametrize("kind", ["orthogonal", "triclinic", "slab"])
def test_domain_clusters_on_the_serial_stand_in_equal_the_serial_api(kind):
    """The distributed labelling on one process (halo = periodic images): the same labels."""
    from hpcquests.distributed.clusters import domain_clusters
    from hpcquests.distributed.domains import exchange_domains
    from hpcquests.parallel import SerialComm

    pos, cell, pbc, mask = _case(kind, 5, 0.3)
    ids = np.random.default_rng(1).permutation(len(pos)) + 10
    dom = exchange_domains(SerialComm(), pos, np.arange(len(pos)), cell, pbc, 5.0, payload={"id": ids})
    rows = dom["atom"][:dom["n_owned"]]
    lab = domain_clusters(SerialComm(), dom["pts"], dom["atom"], dom["n_owned"], dom["id"], mask[rows], 3.0)
    got = np.zeros(len(pos), np.int64)
    got[rows] = lab
    assert np.array_equal(got, hq.clusters(pos, cell, pbc, mask, 3.0, ids=ids))
