"""The configuration of a Rev-EM generation run (``hpcquests generate``), and the volume windows."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .._config import CommandLineConfig
from .entropy import DEFAULT_RIDGE
from .snap import SnapParameters

MODE_CHOICES = ("per-atom", "per-config", "both")


@dataclass(frozen=True)
class GenerateConfig(CommandLineConfig):
    """Every option of a run, with its default (docs/generate.md explains each).

    Volumes are per atom (Å³); R_core = r_core_factor · V_start^{1/3} (Å) in each window, the
    minimum distance 0.9 · R_core unless ``min_distance`` is given. K adapts: ×k_up after
    ``k_patience`` consecutive candidates that did not raise the entropy, ×k_down after a
    candidate too close, within [k_min, k_max].
    """

    element: str
    out: str
    accepted: int = 170
    seed: int = 0
    mode: str = "per-atom"
    atoms: str = "2:25"
    windows: int = 17
    volume_min: float = 0.45
    volume_max: float = 3.0
    v_eq: float | None = None
    r_core_factor: float = 0.7
    min_distance: float | None = None
    bootstrap: int = 10
    k0: float = 1.0
    k_min: float = 1e-3
    k_max: float = 1e3
    k_up: float = 1.5
    k_down: float = 0.7
    k_patience: int = 3
    max_iterations: int = 40
    max_candidates: int = 0
    strain: float = 0.25
    min_width: float = 0.5
    ridge: float = DEFAULT_RIDGE
    snap: SnapParameters = SnapParameters()
    compare: bool = False
    on_candidate: object = dataclasses.field(default=None, compare=False)

    result_neutral = ("compare",)

    def __post_init__(self):
        if self.accepted < 1:
            raise ValueError(f"--accepted must be at least 1 (got {self.accepted})")
        if self.mode not in MODE_CHOICES:
            raise ValueError(f"--mode must be one of {MODE_CHOICES} (got {self.mode!r})")
        self.atom_range()
        if self.windows < 1 or not 0 < self.volume_min < self.volume_max:
            raise ValueError("--windows must be at least 1 and 0 < --volume-min < --volume-max")
        if self.v_eq is not None and not self.v_eq > 0:
            raise ValueError(f"--v-eq must be a positive volume per atom in Å³ (got {self.v_eq})")
        if not self.r_core_factor > 0:
            raise ValueError(f"--r-core-factor must be positive (got {self.r_core_factor})")
        if self.min_distance is not None and not self.min_distance > 0:
            raise ValueError(f"--min-distance must be positive (got {self.min_distance})")
        if self.bootstrap < 2:
            raise ValueError(f"--bootstrap must be at least 2 (got {self.bootstrap})")
        if not (0 < self.k_min <= self.k0 <= self.k_max) or not (self.k_up > 1 and 0 < self.k_down < 1):
            raise ValueError("K: need 0 < --k-min <= --k0 <= --k-max, --k-up > 1 and 0 < --k-down < 1")
        if self.k_patience < 1 or self.max_iterations < 0 or self.max_candidates < 0:
            raise ValueError("--k-patience must be >= 1, --max-iterations and --max-candidates >= 0")
        if not 0 <= self.strain < 1 or not 0 < self.min_width < 1:
            raise ValueError("--strain must be in [0, 1) and --min-width in (0, 1)")
        if not self.ridge > 0:
            raise ValueError(f"--ridge must be positive (got {self.ridge})")

    def atom_range(self) -> tuple[int, int]:
        try:
            lo, hi = (int(v) for v in self.atoms.split(":"))
        except ValueError:
            raise ValueError(f"--atoms must be MIN:MAX (got {self.atoms!r})") from None
        if not 1 <= lo <= hi:
            raise ValueError(f"--atoms must be MIN:MAX with 1 <= MIN <= MAX (got {self.atoms!r})")
        return lo, hi

    def modes(self) -> tuple[str, ...]:
        return ("per-atom", "per-config") if self.mode == "both" else (self.mode,)


def equilibrium_volume(element: str) -> float:
    """Volume per atom (Å³) of ``element``'s reference crystal in ASE (``ase.build.bulk``)."""
    from ase.build import bulk

    from .dataset import check_element

    check_element(element)
    try:
        atoms = bulk(element)
    except Exception:  # ASE has no crystal for it (a molecule, or no data)
        raise ValueError(f"ASE has no reference crystal for {element}: give --v-eq (Å³ per atom)") from None
    return float(atoms.get_volume() / len(atoms))


def window_edges(v_eq: float, config: GenerateConfig) -> np.ndarray:
    """(windows + 1,) volume-per-atom edges, geometric from volume_min · V_eq to volume_max · V_eq
    (equal ratios: every window is the same size on a log scale)."""
    return v_eq * np.geomspace(config.volume_min, config.volume_max, config.windows + 1)


def window_quotas(n_accepted: int, n_windows: int) -> list[int]:
    """N split over the windows in advance: ⌈N / windows⌉ to each window from the lowest while
    that many remain, the rest to the next, none after."""
    q = -(-n_accepted // n_windows)
    out, left = [], n_accepted
    for _ in range(n_windows):
        take = min(q, left)
        out.append(take)
        left -= take
    return out
