"""hpcquests overlap-matrix and novelty (issue 21, first part): equal to the serial API on small
data, outputs, bad input."""

import json

import ase.io
import numpy as np
import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.cli import main
from hpcquests.datasets.analysis import generation_novelty, overlap_matrix
from hpcquests.parallel import SerialComm


@pytest.fixture(scope="module")
def gens(tmp_path_factory):
    """Three generations: cold crystals, hotter ones, vacancies."""
    d = tmp_path_factory.mktemp("gens")
    g = [[testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.04, seed=s) for s in range(2)],
         [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.08, seed=10 + s) for s in range(2)],
         [testing.with_vacancies(testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.05, seed=20),
                                 fraction=0.05, seed=1)]]
    paths = []
    for i, frames in enumerate(g):
        paths.append(d / f"gen{i}.extxyz")
        ase.io.write(paths[-1], frames, parallel=False)
    xs = [hq.get_descriptors(ase.io.read(p, ":", parallel=False)) for p in paths]
    return d, paths, xs


def test_overlap_matrix_equals_the_serial_api(gens, tmp_path, capsys):
    d, paths, xs = gens
    m = overlap_matrix(SerialComm(), xs)
    want = np.array([[hq.overlap(a, b) for b in xs] for a in xs])
    assert np.array_equal(m, want) and np.all(np.diag(m) == 1.0)
    assert main(["overlap-matrix", *map(str, paths), "-o", str(tmp_path / "o"), "--json", "-q"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert np.array_equal(np.array(printed["overlap"]), want) and printed["environments"] == [len(x) for x in xs]
    assert json.loads((tmp_path / "o" / "overlap_matrix.json").read_text())["overlap"] == printed["overlap"]
    assert (tmp_path / "o" / "overlap_matrix.png").stat().st_size > 1000


def test_novelty_against_the_union_of_earlier_generations(gens, tmp_path, capsys):
    d, paths, xs = gens
    rows = generation_novelty(SerialComm(), xs)
    assert [r["generation"] for r in rows] == [1, 2]
    assert rows[0]["novelty"] == hq.novelty(xs[1], xs[0])
    assert rows[1]["novelty"] == hq.novelty(xs[2], np.concatenate(xs[:2]))
    assert rows[1]["reference_environments"] == len(xs[0]) + len(xs[1])
    assert main(["novelty", *map(str, paths), "-o", str(tmp_path / "n"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "generation 1 (gen1.extxyz)" in out and (tmp_path / "n" / "novelty.png").exists()


@pytest.mark.parametrize("args, message", [
    (["overlap-matrix", "{0}"], "overlap-matrix: give at least two datasets"),
    (["novelty", "{0}"], "novelty: give at least two generations"),
    (["novelty", "{0}", "{1}/missing.extxyz"], "GEN1 .*missing.extxyz: no such file"),
])
def test_bad_input_is_one_line(gens, capsys, args, message):
    import re

    d, paths, _ = gens
    assert main([a.format(paths[0], d) for a in args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and re.search(message, err[0]), err
