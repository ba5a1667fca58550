"""The error-and-stop contract under mpiexec (docs/reliability.md): an error on one rank, in
any command and any phase, ends every rank quickly with exit status 2 and exactly one line
from rank 0 naming the failing rank (and the file, frame and line for a bad dump); a
preemption signal to one rank, in any phase, ends every rank with 75, and the rerun completes
with the results of an uninterrupted run."""

import json
import os
import re
import time

import h5py
import pytest

import hpcquests as hq
from hpcquests import testing
from hpcquests.io.store import write_store

from .util import run_mpi

pytestmark = [pytest.mark.mpi, pytest.mark.timeout(240, method="signal")]

#: every rank's exit status, one file each (the launcher reports only one of them)
EXIT_LOGGER = r'''
import os, sys
from hpcquests.cli.uq import main
code = main(sys.argv[1:])
rank = os.environ.get("PMI_RANK", "0")
with open(os.path.join(os.environ["EXIT_LOG"], f"rank{rank}"), "w") as fh:
    fh.write(str(code))
sys.exit(code)
'''


def atom_line_numbers(path, frame):
    """1-based line numbers of the atom lines of ``frame`` in a LAMMPS dump."""
    lines = path.read_text().splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("ITEM: ATOMS")]
    n = int(lines[starts[frame] - 5])  # the NUMBER OF ATOMS value sits 5 lines above ITEM: ATOMS
    first = starts[frame] + 2
    return list(range(first, first + n))


def corrupt(src, dst, frame, fraction):
    """Copy a dump with one malformed number (an x coordinate '1.2.3') at ``fraction`` of the
    atom lines of ``frame``; returns its line number."""
    lines = src.read_text().splitlines(keepends=True)
    numbers = atom_line_numbers(src, frame)
    no = numbers[int(fraction * len(numbers))]
    cols = lines[no - 1].split()
    cols[2] = "1.2.3"
    lines[no - 1] = " ".join(cols) + "\n"
    dst.write_text("".join(lines))
    return no


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("stop")
    train = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.05, seed=s) for s in range(2)]
    x = hq.get_descriptors(train, k=8, cutoff=4.0)
    write_store(d / "ref.h5", x, [0, len(train[0]), len(x)], k=8, cutoff=4.0, species=["Ta"])
    frames = [testing.perturbed_crystal("bcc", "Ta", size=(3, 3, 3), noise=0.05 + 0.01 * f, seed=f) for f in range(6)]
    testing.write_lammps_dump(d / "many.lammpstrj", frames, ("id", "type", "x", "y", "z"), seed=3)
    from ase.io import write

    write(d / "structs.extxyz", frames, format="extxyz")
    return d


SCAN = ["--types", "1=Ta", "-k", "8", "--cutoff", "4.0", "--chunk-atoms", "20", "-q"]


def one_error_line(proc):
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


# --------------------------------------------------------------------------- errors in the scan

@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("mode", ["frames", "domains"])
@pytest.mark.parametrize("bad_rank", [0, 1])
def test_bad_line_on_one_rank_stops_every_rank(data, tmp_path, n, mode, bad_rank):
    """A malformed number read by one rank: every rank stops, exit 2, one line naming the rank,
    the file, the frame and the line. (On 1b2157d the frames-over-ranks case hung forever.)"""
    dump = tmp_path / "bad.lammpstrj"
    if mode == "frames":  # frame f is scanned whole by rank f % n (frame 0 is read by all for species)
        frame, fraction = (n + bad_rank, 0.5) if bad_rank else (n, 0.5)
        extra = []
    else:  # every rank reads a contiguous share of each frame's lines
        frame, fraction = 1, (0.6 if bad_rank == 1 else 0.1)
        extra = ["--frame-parallel-atoms", "0"]
    line = corrupt(data / "many.lammpstrj", dump, frame, fraction)
    t = time.perf_counter()
    proc = run_mpi(n, ["-m", "hpcquests.uq", dump, data / "ref.h5", "--out", tmp_path / "o", *SCAN, *extra],
                   timeout=90)
    assert proc.returncode == 2, proc.stderr
    msg = one_error_line(proc)
    want = f"rank {bad_rank if mode == 'domains' else frame % n}: "
    assert msg.startswith("hpcquests.uq: error: " + want), msg
    assert f"{dump} frame {frame}" in msg and f"(line {line};" in msg and "1.2.3" in msg, msg
    assert time.perf_counter() - t < 60
    assert not (tmp_path / "o" / "summary.json").exists()


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("point", ["uq.chunk", "uq.reference", "uq.frames-done", "logsum"])
def test_injected_scan_error_on_one_rank(data, tmp_path, n, point):
    rank = 1 if point != "uq.frames-done" else n - 1
    env = {"HPCQUESTS_FAULT": f"{point}@{rank}=value"}
    proc = run_mpi(n, ["-m", "hpcquests.uq", data / "many.lammpstrj", data / "ref.h5", "--out", tmp_path / "o",
                       *SCAN], timeout=90, env=env)
    assert proc.returncode == 2, proc.stderr
    assert one_error_line(proc) == f"hpcquests.uq: error: rank {rank}: injected fault at {point} (rank {rank})"


# --------------------------------------------------------------------------- errors in the other commands

COMMANDS = {
    "descriptors": lambda d, o: ["descriptors", d / "structs.extxyz", "-o", o / "s.h5"],
    "dh": lambda d, o: ["dh", d / "structs.extxyz", d / "ref.h5", "-o", o / "dh.npy"],
    "compress": lambda d, o: ["compress", d / "structs.extxyz", "-o", o / "c", "--method", "msc", "fps",
                              "--size", "3"],
    "learning-curve": lambda d, o: ["learning-curve", d / "structs.extxyz", "--unit", "environments", "--sizes", "10",
                                    "--repeats", "1", "-o", o / "lc"],
}
POINTS = {"descriptors": "descriptors", "dh": "logsum", "compress": "msc.step#2", "learning-curve": "logsum#5"}


@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("command", sorted(COMMANDS))
@pytest.mark.parametrize("rank", [0, 1])
def test_error_on_one_rank_in_every_command(data, tmp_path, n, command, rank):
    point = POINTS[command]
    env = {"HPCQUESTS_FAULT": f"{point}@{rank}=value"}
    args = COMMANDS[command](data, tmp_path) + ["-k", "8", "--cutoff", "4.0", "-q"]
    t = time.perf_counter()
    proc = run_mpi(n, ["-m", "hpcquests", *args], timeout=90, env=env)
    assert proc.returncode == 2, proc.stderr
    name = point.split("#")[0]
    assert one_error_line(proc) == (f"hpcquests {command}: error: rank {rank}: injected fault at {name} "
                                    f"(rank {rank})")
    assert time.perf_counter() - t < 60


def test_error_after_the_last_collective_is_reported(data, tmp_path):
    """Rank 0 fails writing the compression outputs while the others have finished: the
    closing agreement still makes every rank exit 2."""
    args = COMMANDS["compress"](data, tmp_path) + ["-k", "8", "--cutoff", "4.0", "-q"]
    proc = run_mpi(2, ["-m", "hpcquests", *args], timeout=90, env={"HPCQUESTS_FAULT": "compress.write@0=value"})
    assert proc.returncode == 2
    assert one_error_line(proc).endswith("rank 0: injected fault at compress.write (rank 0)")
    assert not (tmp_path / "c" / "report.json").exists()


# --------------------------------------------------------------------------- preemption

def dh_result(out_dir):
    with h5py.File(os.path.join(out_dir, "dH.h5")) as f:
        return {(int(a), int(b)): float(v) for a, b, v in zip(f["frame"][...], f["atom_id"][...], f["dH"][...])}


@pytest.fixture(scope="module")
def uninterrupted(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("full") / "o"
    proc = run_mpi(3, ["-m", "hpcquests.uq", data / "many.lammpstrj", data / "ref.h5", "--out", out, *SCAN],
                   timeout=90)
    assert proc.returncode == 0, proc.stderr
    return out


@pytest.mark.parametrize("point", ["uq.startup", "uq.reference", "uq.frames-done", "uq.chunk#2"])
def test_usr2_to_one_rank_in_any_phase(data, tmp_path, uninterrupted, point):
    """USR2 to rank 1 at start-up, while the reference loads, after it has finished its frames
    (the others still scanning) or during a chunk: every rank exits 75; the rerun completes
    with the uninterrupted results."""
    script = tmp_path / "scan.py"
    script.write_text(EXIT_LOGGER)
    logs = tmp_path / "exits"
    logs.mkdir()
    # rank 1 takes frames 1 and 4 of 6; the others are kept busy a little longer
    env = {"HPCQUESTS_FAULT": f"{point}@1=usr2,uq.chunk@0=sleep:0.2,uq.chunk@2=sleep:0.2", "EXIT_LOG": str(logs)}
    args = [script, data / "many.lammpstrj", data / "ref.h5", "--out", tmp_path / "o", *SCAN]
    proc = run_mpi(3, args, timeout=120, env=env)
    assert proc.returncode == 75, proc.stderr
    assert sorted(p.read_text() for p in logs.iterdir()) == ["75", "75", "75"]
    line = one_error_line(proc)
    assert re.fullmatch(r"hpcquests\.uq: stopped: rank 1: rank 1 received SIGUSR2: stopped after the last "
                        r"checkpoint; rerun to resume \(exit 75\)", line), line
    assert not (tmp_path / "o" / "summary.json").exists()
    proc = run_mpi(3, ["-m", "hpcquests.uq", *args[1:]], timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert dh_result(tmp_path / "o") == dh_result(uninterrupted)
    a = json.loads((tmp_path / "o" / "summary.json").read_text())
    b = json.loads((uninterrupted / "summary.json").read_text())
    assert a["frames"] == b["frames"]


@pytest.mark.parametrize("n", [2, 3])
def test_full_disk_on_one_rank(data, tmp_path, n):
    """ENOSPC while rank 1 writes a checkpoint chunk: exit 74 (EX_IOERR, no requeue) on every
    rank, one line naming rank 1; the rerun completes."""
    args = ["-m", "hpcquests.uq", data / "many.lammpstrj", data / "ref.h5", "--out", tmp_path / "o", *SCAN]
    proc = run_mpi(n, args, timeout=90, env={"HPCQUESTS_IOFAULT": "write#2@1=ENOSPC"})
    assert proc.returncode == 74, proc.stderr
    line = one_error_line(proc)
    assert line.startswith("hpcquests.uq: error: rank 1: [Errno 28] No space left on device"), line
    assert run_mpi(n, args, timeout=90).returncode == 0


@pytest.mark.parametrize("n", [2, 3])
def test_full_disk_while_writing_a_store_on_one_rank(data, tmp_path, n):
    """ENOSPC while rank 1 writes its shard: exit 74 on every rank, one line naming rank 1, the
    previous store at the path still whole; the rerun writes the new store."""
    out = tmp_path / "s.h5"
    args = ["-m", "hpcquests", "descriptors", data / "structs.extxyz", "-o", out, "-k", "8", "--cutoff", "4.0", "-q"]
    assert run_mpi(1, ["-m", "hpcquests", "descriptors", data / "structs.extxyz", "--index", "0:2", "-o", out,
                       "-k", "8", "--cutoff", "4.0", "-q"], timeout=90).returncode == 0
    proc = run_mpi(n, args, timeout=90, env={"HPCQUESTS_IOFAULT": "write#3@1=ENOSPC"})
    assert proc.returncode == 74, proc.stderr
    line = one_error_line(proc)
    assert line.startswith("hpcquests descriptors: error: rank 1: [Errno 28] No space left on device"), line
    from hpcquests.io.store import open_store

    with open_store(out) as s:  # the old store (2 structures), whole
        assert s.n_structures == 2 and s.read().shape[0] == 108
    assert run_mpi(n, args, timeout=90).returncode == 0
    with open_store(out) as s:
        assert s.n_structures == 6 and len(os.listdir(f"{out}.shards")) == n
