"""The annotated dump's extra columns have a fixed width (every rank computes its byte offset in
the shared file from the widths before formatting): values are padded to it, and one that does
not fit stops the frame with an error naming it, leaving no file behind."""

import numpy as np
import pytest

from hpcquests import testing
from hpcquests.distributed.dump_frames import DH_COLUMN, ExtraColumn, write_annotated_frame
from hpcquests.io import lammps
from hpcquests.parallel.comm import SerialComm


@pytest.fixture()
def dump(tmp_path):
    path = tmp_path / "md.lammpstrj"
    testing.write_lammps_dump(path, [testing.perturbed_crystal("bcc", "Ta", size=(2, 2, 2), seed=1)])
    frames, _ = lammps.index_dump(str(path))
    info = frames[0]
    part = {"byte_range": lammps.byte_ranges(info, 1)[0], "n": info.n_atoms, "row_counts": [info.n_atoms],
            "row_start": 0}
    return str(path), info, part


def annotate(dump, columns, values, out):
    path, info, part = dump
    write_annotated_frame(SerialComm(), path, info, part, columns, values, str(out))


def test_dh_column_pads_inf_and_nan_and_keeps_finite_values(dump, tmp_path):
    values = np.linspace(-5.0, 3000.0, dump[1].n_atoms)
    values[3], values[7] = np.inf, np.nan
    out = tmp_path / "annotated.lammpstrj"
    annotate(dump, [DH_COLUMN], [values], out)
    atom_lines = out.read_bytes().splitlines()[-dump[1].n_atoms:]
    fields = [line.rsplit(b" ", 1)[-1] for line in atom_lines]
    tails = [line[-16:] for line in atom_lines]
    assert tails[3] == b"             inf" and tails[7] == b"             nan"
    assert tails[0] == b"% .9e" % -5.0  # finite values: the same text as before
    finite = [i for i in range(len(values)) if i not in (3, 7)]
    assert [float(fields[i]) for i in finite] == [float(b"%.9e" % values[i]) for i in finite]
    dh = lammps.read_frame(str(out), lammps.index_dump(str(out))[0][0])["columns"]["dh"]  # our reader reads it back
    assert np.isinf(dh[3]) and np.isnan(dh[7]) and np.allclose(dh[finite], values[finite], rtol=1e-9)


def test_a_value_wider_than_its_column_is_an_error_and_no_file(dump, tmp_path):
    narrow = ExtraColumn("label", b"%3d", 3)
    values = np.arange(dump[1].n_atoms)
    values[5] = 12345
    out = tmp_path / "annotated.lammpstrj"
    with pytest.raises(ValueError, match=r"frame 0, atom line 6: column 'label' value 12345 does not fit its "
                                         r"3-character field"):
        annotate(dump, [narrow], [values], out)
    assert not out.exists() and not (tmp_path / "annotated.lammpstrj.part").exists()
