"""Greedy MSC: brute force, quests parity, lazy == eager, ties, conditional, sizes, bad input."""

import math

import numpy as np
import pytest
from scipy.special import logsumexp

import hpcquests as hq
from hpcquests import testing
from hpcquests.compress.msc import msc
from hpcquests.kernels.registry import CpuBackend

H = 0.015


def brute_msc(descs, size, h=H, reference=None):
    """Independent O(N²) MSC: the DESIGN §1 criterion with full log-sum-exp matrices."""
    def L(y, x):
        d2 = ((y[:, None, :] - x[None, :, :]) ** 2).sum(-1)
        return logsumexp(-d2 / (2 * h * h), axis=1)

    ent = np.array([np.log(len(x)) - L(x, x).mean() for x in descs])
    C = None if reference is None else np.asarray(reference)
    order, scores = [], []
    left = list(range(len(descs)))
    for step in range(size):
        if C is None:
            vals = np.array([ent[i] for i in left])
        else:
            vals = np.array([(-L(descs[i], C)).max() + ent[i] for i in left])
        j = int(np.argmax(vals))  # first occurrence = lowest index (left is sorted)
        order.append(left[j])
        scores.append(vals[j])
        C = descs[left[j]] if C is None else np.concatenate([C, descs[left[j]]])
        left.pop(j)
    return order, np.array(scores), ent


def dataset(n=24, seed=0):
    rng = np.random.default_rng(seed)
    frames = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            frames.append(testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), noise=rng.uniform(0.02, 0.15),
                                                    seed=seed * 100 + i))
        elif kind == 1:
            frames.append(testing.triclinic_crystal(seed=seed * 100 + i))
        elif kind == 2:
            frames.append(testing.small_cell(seed=seed * 100 + i))
        else:
            frames.append(testing.perturbed_crystal("fcc", "Cu", size=(2, 2, 2), noise=rng.uniform(0.02, 0.1),
                                                    seed=seed * 100 + i))
    return [hq.get_descriptors([a], k=12, cutoff=4.0) for a in frames]


@pytest.fixture(scope="module")
def descs():
    return dataset()


def test_matches_brute_force(descs):
    order_bf, scores_bf, ent_bf = brute_msc(descs, 12)
    res = msc(descs, 12, details=True)
    assert res.order == order_bf
    np.testing.assert_allclose(res.entropies, ent_bf, rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.scores, scores_bf, rtol=1e-10, atol=1e-10)


def test_lazy_equals_eager_bitwise(descs):
    lazy = msc(descs, len(descs), details=True)
    eager = msc(descs, len(descs), details=True, lazy=False)
    assert lazy.order == eager.order
    assert np.array_equal(lazy.scores, eager.scores)
    assert lazy.kernel_pairs < eager.kernel_pairs == lazy.eager_pairs


def test_backend_protocol_path_gives_same_selection(descs):
    """The eager path through the kernel-backend protocol (what the GPU twin plugs into)."""
    res = msc(descs, 10, details=True)
    via_backend = msc(descs, 10, details=True, backend=CpuBackend())
    assert via_backend.order == res.order
    np.testing.assert_allclose(via_backend.scores, res.scores, rtol=1e-10, atol=1e-10)


def test_quests_parity():
    quests_fps = pytest.importorskip("quests.compression.fps")
    from quests.entropy import entropy as q_entropy

    frames = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.04 + 0.01 * (i % 7), seed=i)
              for i in range(30)]
    descs = [hq.get_descriptors([a]) for a in frames]
    q_ent = np.array([q_entropy(x, h=H) for x in descs])
    ours = msc(descs, 15, details=True)
    np.testing.assert_allclose(ours.entropies, q_ent, rtol=0, atol=1e-9)
    assert ours.scores.max() < 700  # quests loses precision beyond (subnormal kernel sums)
    q = [int(i) for i in quests_fps.msc(descs, q_ent, 15, h=H)]
    assert ours.order == q


def test_far_structures_stay_finite_and_ordered():
    """Where the reference's kernel sums underflow (δH = +inf), scores stay finite and exact."""
    rng = np.random.default_rng(3)
    descs = [rng.normal(loc=i * 0.5, scale=0.05, size=(6, 5)) for i in range(8)]
    res = msc(descs, 8, details=True)
    bf_order, bf_scores, _ = brute_msc(descs, 8)
    assert np.isfinite(res.scores).all() and res.scores[1:].max() > 1e3
    assert res.order == bf_order
    np.testing.assert_allclose(res.scores, bf_scores, rtol=1e-12)


def test_ties_go_to_lowest_index():
    rng = np.random.default_rng(1)
    base = [rng.normal(scale=0.05, size=(5, 4)) for _ in range(3)]
    descs = [base[0], base[1], base[0].copy(), base[2], base[1].copy(), base[2].copy()]
    res = msc(descs, 6, details=True)
    # duplicates have bitwise-equal scores; the lower index always comes first
    assert res.order.index(0) < res.order.index(2)
    assert res.order.index(1) < res.order.index(4)
    assert res.order.index(3) < res.order.index(5)
    assert res.order == brute_msc(descs, 6)[0]


def test_conditional_against_reference(descs):
    ref = np.concatenate(descs[:3])
    res = msc(descs[3:], 6, reference=ref, details=True)
    order_bf, scores_bf, _ = brute_msc(descs[3:], 6, reference=ref)
    assert res.order == order_bf
    np.testing.assert_allclose(res.scores, scores_bf, rtol=1e-10)
    quests_fps = pytest.importorskip("quests.compression.fps")
    from quests.entropy import entropy as q_entropy

    q_ent = np.array([q_entropy(x, h=H) for x in descs[3:]])
    if res.scores.max() < 700:
        q = quests_fps.msc_conditional(descs[3:], q_ent, 6, [ref], h=H)
        assert res.order == [int(i) for i in q]


def test_sizes_are_prefixes_and_fractions(descs):
    n = len(descs)
    one = msc(descs, n)
    several = msc(descs, [3, 0.5, 1.0])
    assert several == [one[:3], one[: n // 2], one]
    assert msc(descs, 0.1) == one[: int(np.ceil(0.1 * n))]
    assert sorted(one) == list(range(n))


@pytest.mark.parametrize("size", [0, -1, 25, 1.5, 0.0, float("nan"), "ten", True])
def test_bad_sizes(descs, size):
    with pytest.raises(ValueError, match="size"):
        msc(descs, size)


def test_bad_datasets():
    with pytest.raises(ValueError, match="empty"):
        msc([], 1)
    with pytest.raises(ValueError, match="widths"):
        msc([np.zeros((2, 3)), np.zeros((2, 4))], 1)
    with pytest.raises(ValueError, match=r"descriptors\[1\]"):
        msc([np.zeros((2, 3)), np.zeros((0, 3))], 1)
    bad = np.zeros((3, 3))
    bad[1, 2] = np.nan
    with pytest.raises(ValueError, match=r"descriptors\[1\] environment 1 is not finite"):
        msc([np.zeros((2, 3)), bad], 1)
    with pytest.raises(ValueError, match="bandwidth"):
        msc([np.zeros((2, 3))], 1, h=0)
    with pytest.raises(ValueError, match="reference has 4 features"):
        msc([np.zeros((2, 3))], 1, reference=np.zeros((2, 4)))


def test_thread_count_does_not_change_selection(descs):
    a = msc(descs, 12, details=True, threads=1)
    b = msc(descs, 12, details=True, threads=2)
    assert a.order == b.order and np.array_equal(a.scores, b.scores)


def test_distributed_entry_validates_offsets():
    from hpcquests.compress.msc import distributed_msc
    from hpcquests.parallel.comm import SerialComm

    x = np.zeros((5, 3))
    with pytest.raises(ValueError, match="local_offsets must run from 0"):
        distributed_msc(SerialComm(), x, np.array([0, 2, 7]), 0, 1)
    with pytest.raises(ValueError, match="structure 1 has no environments"):
        distributed_msc(SerialComm(), x, np.array([0, 2, 2, 5]), 0, 1)


def test_huge_values_fold_exactly_with_the_same_picks():
    """Where |y|² or 1/(2h²) would overflow the float32 bound fields, the greedy folds exactly:
    the same picks as the eager greedy, no NaN."""
    rng = np.random.default_rng(5)
    descs = [rng.normal(loc=(i % 3) * 1e16, scale=1e15, size=(4, 5)) for i in range(9)]
    lazy = msc(descs, 6, details=True, h=1e15)
    eager = msc(descs, 6, details=True, h=1e15, lazy=False)
    assert lazy.order == eager.order and np.array_equal(lazy.scores, eager.scores)
    assert lazy.extra["bound_rank"] == 0 and lazy.extra["bound_pairs"] == 0
    tiny_h = [rng.normal(scale=0.05, size=(4, 5)) for _ in range(7)]
    lazy = msc(tiny_h, 5, details=True, h=1e-16)
    eager = msc(tiny_h, 5, details=True, h=1e-16, lazy=False)
    assert lazy.order == eager.order and np.isfinite(lazy.scores).all()
    assert lazy.extra["bound_pairs"] == 0


def test_cheap_bounds_do_most_of_the_work():
    """The lazy greedy rejects with the cheap float32 bounds and folds few pairs exactly (a
    regression here is a slowdown, not a wrong pick)."""
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), noise=0.05 + 0.002 * i, seed=i) for i in range(60)]
    descs = [hq.get_descriptors([a]) for a in frames]
    res = msc(descs, 30, details=True)
    assert res.extra["bound_rank"] in (8, 16, 24, 32)
    assert res.kernel_pairs < 0.2 * res.extra["bound_pairs"]
    assert res.kernel_pairs < 0.1 * res.eager_pairs


def test_lookahead_setting_is_checked(monkeypatch):
    import importlib

    from hpcquests.parallel.comm import SerialComm

    msc_module = importlib.import_module("hpcquests.compress.msc")  # the module, not the function
    monkeypatch.setenv("HPCQUESTS_MSC_LOOKAHEAD", "maybe")
    with pytest.raises(ValueError, match="HPCQUESTS_MSC_LOOKAHEAD"):
        msc_module._may_speculate(SerialComm())
    monkeypatch.setenv("HPCQUESTS_MSC_LOOKAHEAD", "off")
    assert msc_module._may_speculate(SerialComm()) is False
    monkeypatch.setenv("HPCQUESTS_MSC_LOOKAHEAD", "auto")
    assert msc_module._may_speculate(SerialComm()) is True  # one rank, one thread: a core each


# --------------------------------------------------------------------------- the one H(S) routine

def _brute_structure_entropy(x, h=H):
    d2 = ((x[:, None, :] - x[None, :, :]) ** 2).sum(-1)
    return math.log(len(x)) - logsumexp(-d2 / (2 * h * h), axis=1).mean()


def test_structure_entropies_is_the_one_routine(descs):
    """metrics.structure_entropies matches a brute-force log-sum-exp; MSC (serial, distributed on
    one rank) and FPS use exactly it: bitwise equal values, whatever the batch or neighbours."""
    from hpcquests.compress import baselines
    from hpcquests.compress.msc import _entropies_of_list, distributed_msc, stack_structures
    from hpcquests.metrics import structure_entropies
    from hpcquests.parallel import SerialComm

    x, off = stack_structures(descs)
    ent = structure_entropies(x, off, H)
    np.testing.assert_allclose(ent, [_brute_structure_entropy(d) for d in descs], rtol=1e-12, atol=0)
    assert np.array_equal(msc(descs, 5, details=True).entropies, ent)
    assert np.array_equal(distributed_msc(SerialComm(), x, off, 0, 5).entropies, ent)
    assert np.array_equal(_entropies_of_list(descs, off, H, None, batch_rows=50), ent)  # batches of a few structures
    assert np.array_equal(structure_entropies(x[off[3]:off[7]], off[3:8] - off[3], H), ent[3:7])
    # FPS starts at the structure it computes as the highest H(S): the same one
    assert baselines.fps_selection(descs, 1) == [int(np.argmax(ent))]


@pytest.mark.parametrize("offsets, h, message", [
    ([1, 5], H, "starting at 0"),
    ([0, 3, 3, 5], H, "by at least 1 per structure"),
    ([0, 4], H, "rise from 0 to 5"),
    ([0, 5], 0.0, "bandwidth h must be positive"),
])
def test_structure_entropies_refuses_bad_input(offsets, h, message):
    from hpcquests.metrics import structure_entropies

    with pytest.raises(ValueError, match=message):
        structure_entropies(np.zeros((5, 3)), np.array(offsets), h)
