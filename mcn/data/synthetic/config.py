"""The generator's knobs: one dataclass, every default documented, validated once at the boundary.

Lengths are in nanometres (not pixels) so that the same knobs give the same physical scene at any
pixel size: 1024 px at 20 nm (the default) and the paper's 2048 px at 10 nm show the same 20.5 um
field of view with the same crystals. Knobs written as a `(low, high)` pair are ranges: each sample,
image or crystal draws its own value from it, which is what makes images and samples differ.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

CLASSES = ("RES", "PES", "AA", "RA")
"""The paper's Fig. 1 scheme: rhombic / polyhedral euhedral-subhedral, amorphous / rounded anhedral."""

SHAPES = {
    "RES": ("rhombohedron",),
    "PES": ("scalenohedron", "prism", "tabular", "truncated_rhombohedron"),
    "AA": ("blob",),
    "RA": ("spheroid",),
}
"""The 3-D habits rendered for each class (the `shape` column of crystals.csv)."""

Range = tuple[float, float]


@dataclass(frozen=True)
class SceneConfig:
    """Knobs of the synthetic SEM scenes. Difficulty knobs are marked [difficulty].

    Samples and composition
      n_samples: rock samples the images are drawn from (images are split evenly, in order).
      class_proportions: expected share of RES, PES, AA, RA over the data set (real data is uneven).
      class_mix_concentration: Dirichlet concentration of each sample's class mix around
        `class_proportions`; lower = samples differ more.
      crystals_per_image: mean number of labelled crystals per image (paper: 1,852 / 48 = 38.6).
      crystals_per_image_spread: log-normal sigma of the per-sample crystal count.
      coverage: (low, high) fraction of the field of view covered by crystal projections in a
        sample; with the count it sets the sample's crystal size (dense, small crystals or few,
        large ones).
      size_sigma: (low, high) log-normal sigma of equivalent diameters within an image.

    Crystal form
      rounding: [difficulty] (low, high) edge and corner rounding of faceted crystals, as a fraction
        of their size: 0 = euhedral, sharp facets; 0.3 = strongly subhedral.
      pes_truncation: [difficulty] (low, high) how far the extra facets of truncated rhombohedra
        cut in (0 = a plain rhomb, so small values look like RES).
      blob_irregularity: [difficulty] (low, high) amplitude of the low-order harmonics that make
        amorphous (AA) outlines lumpy; low values approach rounded crystals.
      resting_fraction: [difficulty] share of faceted crystals lying on a face (slightly tilted,
        random azimuth) rather than in a uniformly random 3-D orientation; resting rhombs show
        their typical rhombic outline.
      spheroid_aspect: [difficulty] (low, high) shortest / longest axis of rounded (RA) ellipsoids.
      spheroid_roughness: (low, high) surface roughness of RA crystals, fraction of radius.
      label_noise: [difficulty] fraction of crystals whose label is flipped to a confusable class
        (RES<->PES, AA<->RA mostly), mimicking expert disagreement; `true_label` keeps the truth.
      depth_range: [difficulty] depth offsets between crystals as a fraction of their size; more
        spread means more and deeper occlusion.

    Labelling
      min_visible_area_nm2: visible fragments smaller than this are merged into the background.
      min_visible_fraction: [difficulty] crystals less visible than this (occluded) are merged
        into the background.

    SEM imaging
      tilt_contrast: (low, high) gain of the secondary-electron tilt effect (yield ~ 1/cos tilt).
      detector_contrast: (low, high) gain of the directional (Everhart-Thornley side detector) term.
      edge_brightening: (low, high) extra signal on facet edges and crystal rims.
      rim_width_nm: width of the bright rim along crystal outlines.
      crystal_brightness: (low, high) mean crystal signal per sample before artefacts.
      background_brightness: (low, high) mean matrix signal per sample.
      blur_nm: (low, high) Gaussian beam blur sigma per image.
      electrons_per_pixel: (low, high) mean detected electrons per pixel (Poisson noise; lower =
        noisier).
      read_noise: (low, high) Gaussian detector noise sigma, grey fraction.
      drift: (low, high) amplitude of the low-order brightness drift across an image.
      charging_streaks: (low, high) mean number of horizontal charging streaks per image.
    """

    n_samples: int = 8
    class_proportions: tuple[float, float, float, float] = (0.40, 0.27, 0.19, 0.14)
    class_mix_concentration: float = 3.0
    crystals_per_image: float = 38.6
    crystals_per_image_spread: float = 0.3
    coverage: Range = (0.45, 0.75)
    size_sigma: Range = (0.25, 0.45)
    rounding: Range = (0.0, 0.25)
    pes_truncation: Range = (0.3, 0.7)
    blob_irregularity: Range = (0.25, 0.55)
    resting_fraction: float = 0.8
    spheroid_aspect: Range = (0.8, 1.0)
    spheroid_roughness: Range = (0.0, 0.04)
    label_noise: float = 0.04
    depth_range: float = 0.6
    min_visible_area_nm2: float = 60_000.0
    min_visible_fraction: float = 0.55
    tilt_contrast: Range = (0.35, 0.6)
    detector_contrast: Range = (0.15, 0.4)
    edge_brightening: Range = (0.2, 0.5)
    rim_width_nm: float = 50.0
    crystal_brightness: Range = (0.4, 0.55)
    background_brightness: Range = (0.12, 0.28)
    blur_nm: Range = (8.0, 30.0)
    electrons_per_pixel: Range = (12.0, 60.0)
    read_noise: Range = (0.01, 0.04)
    drift: Range = (0.03, 0.15)
    charging_streaks: Range = (0.0, 4.0)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple) and f.name != "class_proportions":
                _check_range(f.name, value)
        if self.n_samples < 1:
            raise ValueError(f"`n_samples` must be >= 1; got {self.n_samples}.")
        props = self.class_proportions
        if len(props) != len(CLASSES) or min(props) < 0 or sum(props) <= 0:
            raise ValueError(f"`class_proportions` must be {len(CLASSES)} non-negative shares for "
                             f"{CLASSES} with a positive sum; got {props}.")
        for name in ("class_mix_concentration", "crystals_per_image"):
            if getattr(self, name) <= 0:
                raise ValueError(f"`{name}` must be > 0; got {getattr(self, name)}.")
        for name in ("label_noise", "min_visible_fraction", "resting_fraction"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"`{name}` must be in [0, 1]; got {getattr(self, name)}.")
        if self.coverage[1] > 1.5:
            raise ValueError(f"`coverage` must be <= 1.5 (fraction of the field); got {self.coverage}.")
        if self.spheroid_aspect[0] <= 0 or self.spheroid_aspect[1] > 1:
            raise ValueError(f"`spheroid_aspect` must lie in (0, 1]; got {self.spheroid_aspect}.")
        for name in ("crystals_per_image_spread", "depth_range", "min_visible_area_nm2", "rim_width_nm"):
            if getattr(self, name) < 0:
                raise ValueError(f"`{name}` must be >= 0; got {getattr(self, name)}.")

    @classmethod
    def from_knobs(cls, **knobs) -> "SceneConfig":
        """Build from keyword knobs, refusing unknown names with the list of valid ones."""
        valid = {f.name for f in fields(cls)}
        unknown = sorted(set(knobs) - valid)
        if unknown:
            raise ValueError(f"unknown synthetic knob(s) {unknown}; valid knobs: {sorted(valid)}.")
        cast = {k: tuple(float(x) for x in v) if isinstance(v, (list, tuple)) else v
                for k, v in knobs.items()}
        return cls(**cast)

    def to_dict(self) -> dict:
        """JSON-ready knobs (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


def _check_range(name: str, value: tuple) -> None:
    if len(value) != 2 or value[0] > value[1] or value[0] < 0:
        raise ValueError(f"`{name}` must be a (low, high) pair with 0 <= low <= high; got {value}.")
