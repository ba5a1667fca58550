"""Parsing the atom lines of a LAMMPS text dump: numbers (with nan/inf) and element symbols,
straight from the bytes, into per-column arrays (``io.lammps`` reads the frames)."""

from __future__ import annotations

import numba as nb
import numpy as np

_P10 = np.array([10.0 ** i for i in range(23)])  # exact in float64

# kernel error codes
_E_NUMBER, _E_TOO_MANY, _E_TOO_FEW, _E_ELEMENT = 1, 2, 3, 4


@nb.njit(cache=True, inline="always")
def _is_space(c):
    return c == 32 or c == 9 or c == 13 or c == 11 or c == 12


@nb.njit(cache=True, inline="always")
def _lower(c):
    return c + 32 if 65 <= c <= 90 else c


@nb.njit(cache=True)
def _parse_rows(buf, kinds, dest, n_out, symtab, p10):
    """Parse the whitespace-separated lines of ``buf`` (uint8) into ``out`` (n_out, rows).

    ``kinds[c]`` for file column c: 0 skip, 1 number, 2 element symbol (→ atomic number);
    ``dest[c]`` its row in ``out``. Returns (out, n_rows, err_row, err_col, err_code), err_row
    −1 when all lines parsed."""
    n = buf.shape[0]
    n_cols = kinds.shape[0]
    n_rows = 0
    for i in range(n):
        if buf[i] == 10:
            n_rows += 1
    if n > 0 and buf[n - 1] != 10:
        n_rows += 1
    out = np.empty((n_out, n_rows))
    slow = [np.int64(x) for x in range(0)]  # (token offset, out row, row) of values left to float()
    i = 0
    for row in range(n_rows):
        col = 0
        while True:
            while i < n and _is_space(buf[i]):
                i += 1
            if i >= n or buf[i] == 10:
                break
            if col >= n_cols:
                return out, slow, n_rows, row, col, 2
            kind = kinds[col]
            if kind == 0:  # skipped column: just find the token's end
                while i < n and buf[i] != 10 and not _is_space(buf[i]):
                    i += 1
                col += 1
                continue
            if kind == 2:
                c0 = np.int64(buf[i])
                c1 = np.int64(0)
                j = i + 1
                if j < n and 97 <= buf[j] <= 122:
                    c1 = np.int64(buf[j])
                    j += 1
                if j < n and buf[j] != 10 and not _is_space(buf[j]):
                    return out, slow, n_rows, row, col, 4
                z = symtab[c0 * 256 + c1]
                if z < 0:
                    return out, slow, n_rows, row, col, 4
                out[dest[col], row] = z
                i = j
                col += 1
                continue
            tok = i
            neg = False
            if buf[i] == 45:
                neg = True
                i += 1
            elif buf[i] == 43:
                i += 1
            if i < n and (_lower(buf[i]) == 110 or _lower(buf[i]) == 105):  # nan / inf / infinity
                j = i
                while j < n and buf[j] != 10 and not _is_space(buf[j]):
                    j += 1
                m = j - i
                if m == 3 and _lower(buf[i]) == 110 and _lower(buf[i + 1]) == 97 and _lower(buf[i + 2]) == 110:
                    v = np.nan
                elif (m == 3 or m == 8) and _lower(buf[i]) == 105 and _lower(buf[i + 1]) == 110 \
                        and _lower(buf[i + 2]) == 102:
                    v = np.inf
                    if m == 8:
                        word = (105, 110, 105, 116, 121)  # "inity"
                        for q in range(5):
                            if _lower(buf[i + 3 + q]) != word[q]:
                                return out, slow, n_rows, row, col, 1
                else:
                    return out, slow, n_rows, row, col, 1
                out[dest[col], row] = -v if neg else v
                i = j
                col += 1
                continue
            mant = np.int64(0)
            digits = 0
            exp10 = 0
            any_digit = False
            while i < n and 48 <= buf[i] <= 57:
                any_digit = True
                if digits < 18:
                    mant = mant * 10 + (buf[i] - 48)
                    if mant > 0:
                        digits += 1
                else:
                    exp10 += 1
                i += 1
            if i < n and buf[i] == 46:
                i += 1
                while i < n and 48 <= buf[i] <= 57:
                    any_digit = True
                    if digits < 18:
                        mant = mant * 10 + (buf[i] - 48)
                        if mant > 0:
                            digits += 1
                        exp10 -= 1
                    i += 1
            if not any_digit:
                return out, slow, n_rows, row, col, 1
            if i < n and (buf[i] == 101 or buf[i] == 69):
                i += 1
                eneg = False
                if i < n and (buf[i] == 45 or buf[i] == 43):
                    eneg = buf[i] == 45
                    i += 1
                e = 0
                edig = False
                while i < n and 48 <= buf[i] <= 57:
                    if e < 100000:
                        e = e * 10 + (buf[i] - 48)
                    edig = True
                    i += 1
                if not edig:
                    return out, slow, n_rows, row, col, 1
                exp10 += -e if eneg else e
            if i < n and buf[i] != 10 and not _is_space(buf[i]):
                return out, slow, n_rows, row, col, 1
            if mant == 0:
                v = 0.0
            elif mant < 9007199254740992 and -22 <= exp10 <= 22:  # exact operands: one rounding
                v = float(mant)
                if exp10 > 0:
                    v = v * p10[exp10]
                elif exp10 < 0:
                    v = v / p10[-exp10]
            else:  # > 15-16 significant digits or a far exponent: float() later, for exactness
                v = 0.0
                slow.append(tok)
                slow.append(dest[col])
                slow.append(row)
            out[dest[col], row] = -v if neg else v
            col += 1
        if col != n_cols:
            return out, slow, n_rows, row, col, 3
        i += 1
    return out, slow, n_rows, -1, -1, 0
