"""A segmenter that needs no weights: threshold + distance-transform watershed (scikit-image).

The default wherever no SAM checkpoint or learned model exists, and the baseline those have to
beat. Pipeline:
1. optional preprocessing (a `Preprocessor`, e.g. the paper's chain); the image is then averaged
   down to a working resolution where the smallest crystal spans about `work_min_px` pixels (a
   2048 px image of crystals from 0.5 um at 10 nm is segmented at 512 px: same crystals, a
   sixteenth of the work; labels are scaled back to the full image), and smoothed (Gaussian, sigma 1/8 of the
   smallest crystal, or more on a noisy image: enough to bring the pixel noise down to 1/16 of the
   crystal-matrix contrast, `denoising_sigma_px`);
2. crystals vs matrix by a global threshold; crystals are bright on a dark matrix in
   secondary-electron images (`polarity="dark"` flips that). The default is the lower of two
   multi-Otsu thresholds (three classes: matrix, shaded facets, lit facets): plain Otsu splits lit
   from shaded facets on scenes with strong facet shading and loses whole facets. Where the image
   is clean enough (`DIM_SIGNIFICANCE` above the matrix level, `matrix_level`), the lowest of four
   classes is used instead, so dim crystals (lower in the field, in another's shadow) are kept whole
   (ampis-powder F1 0.760 -> 0.783; 0.785 -> 0.800 with the matrix level read below the lower
   three-class threshold, which a densely packed field does not bias).
   "li", "otsu" and a local mean threshold (uneven charging / illumination) are the alternatives;
3. mask clean-up: small enclosed holes are filled (dark facets and pits inside a crystal fall below
   the threshold; large ones are matrix between crystals) and specks smaller than the smallest
   crystal removed;
4. touching crystals are split by a watershed seeded at crystal centres, from two cues, because
   each alone fails on one kind of touching crystal: (a) the peaks of the distance transform
   (lightly smoothed, `SEED_SMOOTHING`) that are its highest within `seed_spacing` smallest-crystal
   diameters: two touching crystals of the smallest size have centres about one diameter apart,
   so every crystal gets a seed even where the neck between two is shallow (overlapping convex
   particles), and the extra maxima that a noisy outline makes inside one crystal are dropped;
   (b) the h-maxima of a compressed distance transform,
   log(1 + d / c) with c = `neck_scale` x the smallest crystal: two touching crystals
   get two seeds when the neck between them is narrower than 1 - `split_ratio` of the smaller
   crystal's width (for crystals much larger than c, a scale-free rule, so one setting splits 1 um
   and 10 um crystals alike; for crystals near the smallest size, the neck must be narrower by a
   few pixels, so noise on the outline does not split them); this keeps a small crystal beside a
   large one, whose window in (a) holds the large one's deeper interior. Of the union, a seed that
   lies inside the largest inscribed disc of a deeper seed is dropped (another crystal's centre
   cannot lie inside a crystal), and so is a second seed on one top of the distance map (pixels
   within `SEED_DEPTH_PX` of a maximum, as along the flat ridge of an elongated crystal): on
   15-40 px touching particles F1 0.63 -> 0.67, synthetic default 0.79 -> 0.83, ampis-powder
   unchanged (0.76). The h-maxima are found on a coarser grid (the distance transform's block
   maxima, a few blocks across the smallest crystal), which is what keeps this fast. Before seeding,
   the mask is cut where the intensity gradient inside it is at least `edge_cut` times the median
   gradient on the mask's outline: a step as strong as a crystal's own outline, inside the mask, is
   where one crystal occludes another (convex overlaps have no neck for the distance transform to
   find; on synthetic scenes F1 +0.02, on ampis-powder +0.03); facet shading and surface texture
   are weaker and stay uncut. A seed's inscribed disc (for the pruning above) is measured in the
   uncut mask: a step across one crystal (a lit facet) cuts it into pieces whose seeds lie inside
   that crystal's disc, and must not split it. The flooded relief is the negative distance, half
   of it (`cut_relief`) measured in the cut mask, so a crystal whose seed only the cut revealed is
   not flooded from its neighbour's deeper basin, plus `edge_weight` times the intensity gradient,
   so the split line follows the brightness step where one crystal occludes another rather than
   the straight line a pure distance watershed draws (15-40 px touching particles F1 0.694 -> 0.715, synthetic default 0.855 and ampis-powder 0.785 -> 0.782);
   after step 5, neighbouring instances that are pieces of one crystal are joined
   (`_join_cut_crystals`): a flat, elongated or cupped crystal has several distance-transform
   peaks, and the seeds cut it where nothing in the image does. Pieces join where the line between
   them has no brightness step (mean gradient below `join_step` of the outline's, greys within
   `SAME_GREY`) and no neck (it spans `JOIN_NECK` of the smaller piece's width), and their union is
   as convex as one crystal (no hull notch `JOIN_DEFECT` smallest-crystal diameters deep: two
   touching crystals leave one about as deep as the smaller one's radius) and not above the largest
   crystal (ampis-powder F1 0.839 -> 0.841, synthetic default 0.856 -> 0.859, 15-40 px touching
   particles 0.731 -> 0.733);
5. dim crystals: on clean images (`DIM_SIGNIFICANCE`), crystals dimmer than the threshold (lower in
   the field, in another's shadow; on ampis-powder grey 0.15-0.25 on a 0.07 matrix, the threshold
   0.21) are sought down to `dim_fraction` of the way from the matrix level to the threshold:
   regions between the two levels, outside the crystal mask, opened by a disc (`DIM_OPENING`:
   the blurred rims of bright crystals are a band only a few pixels wide), at least the
   smallest crystal and with an outline (`DIM_EDGE`), split by the same seeds and watershed. A
   dim region that touches a crystal across no brightness step (`dim_join`) is the dim part of
   that crystal and joins it; across a step (an occluding edge), it is a crystal of its own
   (ampis-powder F1 0.800 -> 0.828; noisy images, where the lower threshold would be noise, are
   left alone). Where the size range is not the user's, dim regions smaller than the smallest
   crystal, down to MIN_ESTIMATE_PX, are crystals too if their outline is twice as strong
   (`SMALL_DIM_EDGE`): small particles a little under the threshold (ampis-powder 0.829 -> 0.833;
   0.845 -> 0.851 with the opening narrowed to the width of a blurred rim, `DIM_OPENING`, which
   had erased the dim particles whose blurred core between the two levels is narrower than its disc);
6. dim crystals merged into a brighter one: on clean images, a dim particle partly hidden behind a
   bright one (lower in the field) leaves the distance transform no neck, and its lit part lies
   above the threshold. In a secondary-electron image each particle is a brightness plateau of its
   own, and one particle's shading changes smoothly: the segmented crystals are divided into
   plateaus (`brightness_plateaus`: grown over the gradient from pixels well clear of a step,
   `STEP_CORE`, so a step that fades at the ends of a contact does not join two particles' cores,
   and joined where their mean greys differ by less than `step_contrast` of the dim-crystal
   contrast). A plateau that is smaller and dimmer than the one it shares its longest boundary with,
   clearly dimmer (`STEP_DIMMER`), holds a disc of `STEP_DISC` smallest-crystal diameters, is
   brighter than the dim-crystal level (not a filled gap of matrix) and has an outline of at least
   one smallest-crystal diameter on the matrix (not a pit in a crystal's surface) becomes a crystal
   of its own, unless its centre lies inside the largest inscribed disc of the crystal it was part
   of (a shaded facet, as in step 4) (ampis-powder F1 0.829 -> 0.835, and 0.839 -> 0.843 with
   STEP_CORE 0.5 -> 0.3, STEP_DISC and STEP_DIMMER, D50 +14.6% -> +10.1%; synthetic default 0.856 ->
   0.853; noisy images are left alone);
7. `filter_labels`: area limits and relabelling 1..N (shared with the SAM segmenter). Where the
   size range is not the user's and the noise forced a smoothing wider than 1/8 of the smallest
   crystal, the smallest instance kept spans `RESOLVED_SIGMAS` smoothing sigmas: narrower ones are
   pieces the noisy relief cut from crystals (15-40 px touching particles, where the estimated
   smallest crystal is its 4 px floor: F1 0.717 -> 0.731, ampis-powder and synthetic unchanged).

Scale: every length derives from the crystal size range (min_crystal_px, max_crystal_px), in
pixels. `for_pixel_size` sets it from a physical range in nm (`--crystal-size-nm MIN,MAX`); where no
range is given but the pixel size is known, the carbonate range `CARBONATE_CRYSTAL_SIZE_NM` is used
on each image whose own typical crystal size (`estimate_crystal_size_px`) fits it (at least
`PRIOR_MARGIN` times its minimum, at most its maximum), and the
image's estimate otherwise (with a warning: the image is not of carbonate microcrystals at that
scale, e.g. 200 nm TiO2 particles); with neither, the range is estimated on each image. An estimated
smallest crystal is one SIZE_SPREAD-th of the typical (area-weighted) one, and the pipeline's
constants (seed window, 1/8 smoothing, 8x holes, working resolution) were set for that length. A
range the user gives is what is worth measuring: its ends are percentiles of the diameters (e.g. the
5th and 95th), not bounds, and a true smallest crystal of touching crystals is about one seed window,
too coarse to split them. So the pipeline keeps the estimate's length, its typical size held inside
the range, at least GIVEN_SCALE_FLOOR of the given smallest and at most it (`_scale_px`), and the
range selects the instances: kept down to OUTLINE_ERROR_PX below the smallest, dropped beyond
CLUMP_FACTOR times the largest (true 5th-95th percentile range given: 15-40 px touching particles
F1 0.459 -> 0.738, ampis-powder 0.815 -> 0.839, synthetic default 0.714 -> 0.858; 0.731, 0.839 and
0.856 by default). Images above the pixel budget `mcn.data.io.MAX_IMAGE_PIXELS` are refused
(`max_pixels` raises it).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import ndimage as ndi
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree
from skimage import feature, filters, morphology, segmentation

from mcn.data.io import MAX_IMAGE_PIXELS, check_image_size
from mcn.errors import DataError
from mcn.segment.postprocess import filter_labels

THRESHOLDS = ("otsu", "li", "multiotsu", "local")
CARBONATE_CRYSTAL_SIZE_NM = (500.0, 10000.0)
"""Micrite and microspar calcite crystals: about 0.5 to 10 um across (the paper: micropores are
bounded by microcrystals of at most 10 um; its images, 2048 px at 10 nm, resolve crystals from about
half a micrometre). Pass it as `crystal_size_nm` (or `--crystal-size-nm carbonate`) for carbonates."""
SIZE_SPREAD = 10.0
"""An estimated range spans this factor either side of the typical (area-weighted) crystal size:
the smallest carbonate crystals worth measuring (0.5 um) are about a tenth of the crystals that
make up most of the area (~5 um); a narrower range drops the small crystals of a broad size
distribution (on ampis-powder, a factor 4.5 halved the recall)."""
ESTIMATE_PIXELS = 1024 * 1024
"""The size estimate works on the image averaged down to about this many pixels (speed)."""
NOISE_MARGIN = 16.0
"""Smoothing brings pixel noise down to this fraction (1/16) of the crystal-matrix contrast: the
default threshold sits about a quarter of the contrast above the matrix, so matrix pixels then lie
about 4 noise sd below it (one in 30,000 crosses) instead of breaking into specks."""
SIGNIFICANCE = 3.0
"""A crystal pixel is at least this many residual-noise sd brighter than the matrix level (about
one matrix pixel in 700 crosses it; specks of a few such pixels are then below the minimum area)."""
DIM_SIGNIFICANCE = 10.0
"""Where the lowest of four Otsu classes (matrix, dim crystals, shaded and lit facets) lies at least
this many residual-noise sd above the matrix level, it is the threshold: dim crystals (particles
lower in the field, in another's shadow) are then kept whole, and the noise cannot roughen or join
outlines at that level. Closer to the matrix (noisy images), the lower of three classes is used."""
DIM_OPENING = 0.1
"""Dim-crystal regions are opened with a disc whose radius is this many smallest-crystal diameters
(at least 1 px): the blurred rim of a bright crystal, a band a pixel or two wide between the two
thresholds, is removed (what survives still needs an outline, DIM_EDGE), while a dim crystal
survives even where only its blurred core lies between the thresholds. A radius of 0.25 (7 px discs
on ampis-powder) erased dim particles 7-12 px across, whose core there is 6-8 px wide
(ampis-powder F1 0.845 -> 0.851, misses < 15 px 54 -> 39; synthetic default 0.856 -> 0.853)."""
DIM_EDGE = 0.075
"""A dim region is a crystal only where the mean gradient along its rim is at least this fraction of
the crystal outlines' median gradient: a crystal has an outline, a brighter patch of the matrix
(uneven charging or coating) fades out without one (on the synthetic scenes 23 such patches were
taken for crystals; a dim ampis-powder particle's rim is a step of 0.1 on a 0.4 outline contrast)."""
SMALL_DIM_EDGE = 0.15
"""A dim region smaller than the smallest crystal (down to MIN_ESTIMATE_PX across) is a crystal only
where the mean gradient along its rim is at least this fraction of the outlines' median gradient,
twice DIM_EDGE: its rim is short, and the blurred flank of a bright crystal is a weak slope (on
ampis-powder, particles of 4-12 px at grey 0.15-0.22, under a 0.21 threshold, were missed)."""
STEP_CORE = 0.3
"""Brightness plateaus (module doc, step 6) grow from pixels whose gradient is below this fraction of
the outlines' median gradient: inside one crystal the shading changes smoothly, while the rim or
crevice between two touching crystals is a step about half as strong as an outline (ampis-powder:
0.3-0.8 of it between a dim particle and the bright one in front). Set at the bottom of that range:
where the step fades at the ends of a contact, cores above it joined the two particles' plateaus
through the gap (ampis-powder: one plateau of 12,807 px, host and satellite)."""
STEP_DISC = 0.35
"""A plateau that becomes a crystal holds a disc of this many smallest-crystal diameters: a dim
particle partly behind another shows less than its whole disc, a sliver along a sphere's rim none."""
STEP_DIMMER = 0.65
"""A plateau that becomes a crystal stands at most this fraction of its host's height above the
matrix: a particle lower in the field, or in the other's shadow, is clearly dimmer, while a crystal's
own shaded side differs less (ampis-powder new plateaus: median 0.58 where a true particle, 0.72
where part of one)."""
SAME_GREY = 0.5
"""Two pieces are of one crystal only where their mean greys differ by less than this fraction of the
dim-crystal contrast (lowest four-class threshold minus matrix level; the three-class one on noisy
images): as `step_contrast`, one particle's texture and shading are one brightness plateau."""
JOIN_NECK = 0.8
"""Two pieces are of one crystal only where the line between them spans at least this fraction of the
smaller piece's width (its largest inscribed disc): a crystal cut in two has no neck at the cut, while
two touching convex particles meet along a chord shorter than either is wide (two equal discs whose
centres are 1.5 radii apart: 0.75 of a piece's width)."""
JOIN_DEFECT = 0.75
"""Two pieces are of one crystal only where their union is as convex as one crystal: no point of its
convex hull outside it lies this many smallest-crystal diameters deep (two touching crystals of at
least that size leave a notch about as deep as the smaller one's radius where they meet; a crystal's
rough outline, much less)."""
PRIOR_MARGIN = 2.0
"""A default size range fits an image when its typical (area-weighted) crystal is at least this
many times the range's minimum: with log-normal crystal sizes (sigma 0.25-0.5), a quarter or more of
the crystals lie below half the typical size."""
SEED_SMOOTHING = 0.5
"""Gaussian sigma (px) on the distance transform before its peaks are taken as seeds: enough to
join the twin maxima a one-pixel step of the outline makes, too little to move a crystal's centre."""
SEED_DEPTH_PX = 0.25
"""Seeds on one top of the distance map (connected pixels within this of its maximum) are one seed:
the ridge along an elongated crystal is flat, while two overlapping convex crystals, however
shallow the neck between them, dip by more (by 13% of their radius where their centres are one
radius apart)."""
MIN_ESTIMATE_PX = 4.0
"""Smallest crystal diameter an estimate may give: below this, an outline is noise."""
RESOLVED_SIGMAS = 6.0
"""An instance narrower than this many smoothing sigmas has no interior: a Gaussian spreads an outline
over 2.6 sigma (10-90%), so it is two blurred edges, a piece the noisy relief cut from a crystal.
Only binds where the noise forces smoothing wider than 1/8 of the smallest crystal."""
OUTLINE_ERROR_PX = 1.0
"""Instances down to this many working pixels narrower than a given smallest crystal are kept: a
segmented outline lies up to half a pixel off on each side, so a crystal of exactly the given size
can come out a pixel narrower (touching 16-20 px discs, their 5th-95th percentile range given: 94 of
100 and 53 of 56 found at the given minimum, all with this margin)."""
GIVEN_SCALE_FLOOR = 0.3
"""With a size range the user gives, the pipeline's length (`_scale_px`) is at least this fraction of
its smallest crystal: one SIZE_SPREAD-th of the typical crystal reads far below it where the range is
narrow (synthetic default, 59-203 px given: 8-20 px, and the seeds cut the large textured crystals:
F1 0.818; 0.858 at 0.3, 0.851 at 0.4), while the seed window (`seed_spacing` x 0.3 = 0.375 of the
smallest crystal) and the hole limit (8 x 0.3^2 = 0.72 of its area) stay under one smallest crystal,
so touching smallest crystals are split (15-40 px touching particles: 0.738 at 0.3 as without the
floor, 0.729 at 0.35, 0.710 at 0.4)."""
CLUMP_FACTOR = 2.0
"""Only instances wider than this many times a given largest crystal are dropped: the given largest
is a high percentile of the diameters, not a bound (a few crystals and slightly oversized outlines
exceed it), while one this wide covers four times its area, a clump of crystals or a grain, not
one crystal (ampis-powder, its 5th-95th percentile range given: F1 0.815 at the given largest, 0.839
at twice it; with no largest the same within 0.001)."""


class ScaleWarning(UserWarning):
    """The default crystal size range does not fit an image; its own estimate was used."""


def parse_crystal_size_nm(text: str | None) -> tuple[float, float] | None:
    """`--crystal-size-nm MIN,MAX` (nm; or "carbonate") as a (min, max) tuple; "auto" or None: the
    default, None (`ClassicalSegmenter.for_pixel_size`: the carbonate range on each image it fits,
    else that image's own estimate). Raises DataError naming the flag on bad input."""
    if text is None or text.strip().lower() == "auto":
        return None
    if text.strip().lower() == "carbonate":
        return CARBONATE_CRYSTAL_SIZE_NM
    parts = text.split(",")
    try:
        low, high = (float(p) for p in parts) if len(parts) == 2 else (math.nan, math.nan)
    except ValueError:
        low = high = math.nan
    if not (0 < low < high and math.isfinite(high)):
        raise DataError(f"--crystal-size-nm must be MIN,MAX in nm with 0 < MIN < MAX (or 'carbonate', "
                        f"'auto'); got {text!r}")
    return low, high


def estimate_crystal_size_px(image: np.ndarray, polarity: str = "bright") -> tuple[float, float]:
    """(min, max) crystal diameter in pixels estimated from the image itself.

    Each crystal's width is read where the distance transform of the foreground peaks inside it
    (`crystal_widths_px`); the median of those widths, each weighted by its area (noise specks,
    however many, cover little of the image), is the typical crystal size D; the range is
    D / SIZE_SPREAD to D * SIZE_SPREAD, floored at MIN_ESTIMATE_PX.
    """
    return _range_around(_area_weighted_median(crystal_widths_px(image, polarity)))


def crystal_widths_px(image: np.ndarray, polarity: str = "bright") -> np.ndarray:
    """Width in pixels of each crystal of the image: twice the local maxima of the foreground's
    distance transform (foreground by the default threshold at light smoothing, on the image
    averaged down to about ESTIMATE_PIXELS).

    A crystal's widest inscribed disc is centred on a local maximum of the distance transform
    whether or not it touches others, so touching crystals keep their own width; the largest value
    per connected piece (the earlier estimate) reads a cluster of small touching crystals as one
    large crystal (15-40 px particles in clusters came out at 2-3x their size).
    """
    image = np.asarray(image, np.float32)
    if np.ptp(image) == 0:
        raise DataError("cannot estimate the crystal size of a blank image; give --crystal-size-nm")
    block = max(1, math.ceil(math.sqrt(image.size / ESTIMATE_PIXELS)))  # the size of crystals, not
    smooth = filters.gaussian(_block_reduce(image, block, np.mean), sigma=1.0)  # of pixels, is sought
    if polarity == "dark":
        smooth = smooth.max() - smooth
    fg = smooth > filters.threshold_multiotsu(smooth, classes=3)[0]
    fg = morphology.remove_small_holes(fg, max_size=64)
    fg = morphology.remove_small_objects(fg, max_size=9)
    dist = ndi.distance_transform_edt(fg)
    centre = (dist == ndi.maximum_filter(dist, size=3)) & (dist >= 1.5)
    rows, cols = np.nonzero(centre)
    value = dist[rows, cols]
    keep = np.ones(value.size, bool)
    for cell in (1, 2, 4, 8, 16):  # a centre holds the largest disc within about its radius: this
        near = ndi.maximum_filter(_block_reduce(dist, cell, np.max), size=5)  # drops the small bumps
        keep &= (value < 2 * cell) | (value >= near[rows // cell, cols // cell])  # along a medial axis
    centre[rows[~keep], cols[~keep]] = False
    peaks, n = ndi.label(centre, structure=np.ones((3, 3)))
    if n == 0:
        raise DataError("no crystals to estimate a size from; give --crystal-size-nm")
    widths, at = np.zeros(n + 1), peaks > 0
    np.maximum.at(widths, peaks[at], dist[at])  # a plateau of maxima is one crystal
    return 2 * block * widths[1:]


def _area_weighted_median(widths: np.ndarray) -> float:
    order = np.argsort(widths)
    weight = np.cumsum(widths[order] ** 2)
    return float(widths[order][np.searchsorted(weight, weight[-1] / 2)])


def _range_around(typical: float) -> tuple[float, float]:
    return max(typical / SIZE_SPREAD, MIN_ESTIMATE_PX), max(typical * SIZE_SPREAD, 2 * MIN_ESTIMATE_PX)


def pixel_noise(image: np.ndarray) -> float:
    """Standard deviation of the pixel noise: the median absolute response to Immerkaer's (1996)
    Laplacian-difference mask, blind to smooth shading and to most edges."""
    kernel = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    return float(np.median(np.abs(ndi.convolve(image, kernel)))) / (0.6745 * 6)  # mask norm 6


def smoothed_noise(noise: float, sigma: float) -> float:
    """White noise smoothed by a Gaussian of `sigma` px keeps 1 / (2 sqrt(pi) sigma) of its sd
    (at most all of it: below sigma 0.28 the formula would exceed 1)."""
    return noise * min(1.0, 1 / (2 * math.sqrt(math.pi) * sigma)) if sigma > 0 else noise


def denoising_sigma_px(image: np.ndarray, noise: float | None = None, margin: float = NOISE_MARGIN) -> float:
    """Gaussian sigma (px) that brings the image's pixel noise (`pixel_noise` unless given) down to
    1/`margin` of its crystal-matrix contrast (the difference of the mean grey above and below
    Otsu's threshold), so the threshold does not break crystals and matrix into specks."""
    above = image > filters.threshold_otsu(image)
    if above.all() or not above.any():
        return 0.0
    contrast = float(image[above].mean() - image[~above].mean())
    noise = pixel_noise(image) if noise is None else noise
    return margin * noise / (2 * math.sqrt(math.pi) * contrast)


def matrix_level(smooth: np.ndarray, level: float) -> float:
    """Grey level of the matrix: the median below the lower of two multi-Otsu thresholds `level`.
    Below Otsu's single threshold (the earlier estimate), the shaded facets of a densely packed
    field outnumber the matrix pixels (an ampis-powder image read 0.22 for a 0.065 matrix, so its
    dim particles were taken for noise and cut away)."""
    return float(np.median(smooth[smooth <= level]))


def multiotsu_levels(bright: np.ndarray, noise: float) -> tuple[float, float, float | None]:
    """(matrix level, lower three-class multi-Otsu threshold, lowest four-class threshold or None)
    of an image of bright crystals: the four-class threshold only where it lies DIM_SIGNIFICANCE
    residual-noise sd above the matrix (a clean image, where dim crystals can be told from noise)."""
    three = filters.threshold_multiotsu(bright, classes=3)[0]
    matrix = matrix_level(bright, three)
    four = filters.threshold_multiotsu(bright, classes=4)[0]
    return matrix, three, four if four >= matrix + DIM_SIGNIFICANCE * noise else None


def _boundary_steps(labels: np.ndarray, grad: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(lower label, higher label, length in 4-connected pixel edges, mean of `grad` across them) of
    each boundary between two different labels > 0."""
    a, b, step = _neighbours(labels, grad)
    lo, hi = np.minimum(a, b).astype(np.int64), np.maximum(a, b).astype(np.int64)
    n = int(labels.max()) + 1
    pairs, inverse = np.unique(lo * n + hi, return_inverse=True)
    length = np.bincount(inverse, minlength=len(pairs))
    return pairs // n, pairs % n, length, np.bincount(inverse, step, minlength=len(pairs)) / length


def _join_across_weak_boundaries(labels: np.ndarray, first: int, grad: np.ndarray, limit: float) -> np.ndarray:
    """Each label >= `first` joins the label below `first` it shares the longest boundary with,
    where the mean gradient along that boundary is below `limit` (no brightness step: one crystal)."""
    lo, hi, length, mean = _boundary_steps(labels, grad)
    lut = np.arange(int(labels.max()) + 1)
    joined = set()
    for k in np.argsort(-length, kind="stable"):
        host, part = int(lo[k]), int(hi[k])
        if host < first <= part and part not in joined and mean[k] < limit:
            joined.add(part)
            lut[part] = host
    return lut[labels]


def _neighbours(labels: np.ndarray, values: np.ndarray | None = None) -> tuple[np.ndarray, ...]:
    """Labels on the two sides of each 4-connected pixel edge between two different labels > 0, and,
    given `values` (an image), the mean of its two pixels at each such edge."""
    a = np.concatenate([labels[:, :-1].ravel(), labels[:-1, :].ravel()])
    b = np.concatenate([labels[:, 1:].ravel(), labels[1:, :].ravel()])
    across = (a > 0) & (b > 0) & (a != b)
    if values is None:
        return a[across], b[across]
    mean = np.concatenate([(values[:, :-1] + values[:, 1:]).ravel(), (values[:-1, :] + values[1:, :]).ravel()]) / 2
    return a[across], b[across], mean[across]


def _most_shared(a: np.ndarray, b: np.ndarray, n: int) -> np.ndarray:
    """For each value 0..n-1 of `a`, the value of `b` paired with it most often (0 where none)."""
    m = int(b.max(initial=0)) + 1
    pairs, count = np.unique(a.astype(np.int64) * m + b, return_counts=True)
    order = np.lexsort((-count, pairs // m))  # by a, the most frequent b first
    chosen = pairs[order][np.unique(pairs[order] // m, return_index=True)[1]]
    most = np.zeros(n, np.int64)
    most[chosen // m] = chosen % m
    return most


def _deepest(values: np.ndarray, labels: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Flat position of the largest value of `values` in each label of `index` (`ndi.maximum_position`
    scans every label: 0.3 s on an image of thousands)."""
    at = np.flatnonzero(np.isin(labels, index))
    order = np.lexsort((-values.ravel()[at], labels.ravel()[at]))
    found, first = np.unique(labels.ravel()[at][order], return_index=True)
    return at[order][first][np.searchsorted(found, index)]


def brightness_plateaus(bright: np.ndarray, grad: np.ndarray, mask: np.ndarray, core: float, contrast: float,
                        min_core_px: float) -> np.ndarray:
    """Labels (0 outside `mask`) of the regions of even brightness inside `mask`: grown over the
    gradient from cores (connected pixels with gradient below `core`, at least `min_core_px`), and
    neighbouring regions joined where their mean brightness differs by less than `contrast` (texture
    and smooth shading: one plateau; a separate particle: a plateau of its own)."""
    cores, n = ndi.label(mask & (grad < core))
    cores = np.where(np.bincount(cores.ravel(), minlength=n + 1)[cores] >= min_core_px, cores, 0)
    regions = segmentation.watershed(grad, cores, mask=mask)
    n = int(regions.max()) + 1
    mean = np.bincount(regions.ravel(), bright.ravel(), n) / np.maximum(np.bincount(regions.ravel(), minlength=n), 1)
    a, b = _neighbours(regions)
    even = np.abs(mean[a] - mean[b]) < contrast
    graph = coo_matrix((np.ones(int(even.sum())), (a[even], b[even])), shape=(n, n))
    return np.where(mask, connected_components(graph, directed=False)[1][regions], 0)


def _concavity(mask: np.ndarray) -> float:
    """Depth (px) of the deepest point of `mask`'s convex hull outside it, from the hull's outline."""
    hull = morphology.convex_hull_image(mask)
    return float(ndi.distance_transform_edt(np.pad(hull, 1))[1:-1, 1:-1][hull & ~mask].max(initial=0))


def _block_reduce(image: np.ndarray, block: int, func) -> np.ndarray:
    """`func` (np.mean, np.max) over block x block tiles; edges padded by replication."""
    if block == 1:
        return image
    rows, cols = -(-image.shape[0] // block) * block, -(-image.shape[1] // block) * block
    padded = np.pad(image, ((0, rows - image.shape[0]), (0, cols - image.shape[1])), mode="edge")
    return func(padded.reshape(rows // block, block, cols // block, block), axis=(1, 3))


def _upsample(labels: np.ndarray, block: int, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour enlargement by `block`, cropped to `shape`."""
    if block == 1:
        return labels
    return np.repeat(np.repeat(labels, block, axis=0), block, axis=1)[: shape[0], : shape[1]]


class ClassicalSegmenter:
    """Threshold + h-maxima distance watershed instance segmenter.

    min_crystal_px, max_crystal_px: diameters in pixels of the smallest and largest crystal worth
        measuring, e.g. the 5th and 95th percentile diameters; None estimates them on each image
        (`estimate_crystal_size_px`). With `size_prior`, the given range is a default that is used
        only on images whose estimated typical size lies inside it (module doc). An estimated or
        default smallest sets the minimum area (a disc of that diameter, or of RESOLVED_SIGMAS
        smoothing sigmas where that is larger), the smoothing sigma (1/8 of it unless `smoothing` is
        given), the seed scale, the hole limit and the working resolution; instances larger than a
        disc of a default largest are dropped. A range the user gives selects the instances only:
        kept down to OUTLINE_ERROR_PX below its smallest, dropped beyond CLUMP_FACTOR times its
        largest (clumps, grains, the field); the lengths above then follow the image's own estimate
        of the smallest crystal, held inside the range (module doc, Scale).
    threshold: "multiotsu" (lower of 3-class Otsu), "otsu", "li" (global), or "local" (mean over
        `block_size` pixels, default 4x the smallest crystal rounded to odd).
    polarity: "bright" crystals on a dark matrix, or "dark".
    split_ratio: touching crystals are split where the neck between them is narrower than
        1 - split_ratio of the smaller one's width (module doc, step 4); higher splits less.
    neck_scale: below this many smallest-crystal diameters the split rule turns from relative to
        absolute (module doc, step 4).
    seed_spacing: a distance-transform peak that is the highest within this many smallest-crystal
        diameters is a seed (module doc, step 4); higher splits less.
    max_hole_px: enclosed dark patches up to this many pixels are filled; None means 8x the
        minimum crystal area.
    edge_cut: seeds are found on the mask cut along gradients this strong relative to the outline's
        median gradient (module doc, step 4); None: no cut.
    edge_weight: weight of the (normalised) intensity gradient in the watershed relief, in units
        of the smallest crystal; 0 gives the plain distance watershed.
    cut_relief: share (0-1) of the relief's distance taken in the mask cut along occluding edges
        (`edge_cut`) rather than in the whole mask: a crystal whose seed the cut found lies on the
        flank of its neighbour's distance peak, and is flooded from it unless the relief dips at
        the cut too (module doc, step 4); 0: the whole mask only.
    work_min_px: working resolution: the image is averaged down by an integer factor while the
        smallest crystal stays at least this many pixels across (None: full resolution).
    preprocessor: a callable image -> image applied first (e.g. `Preprocessor()`), or None.
    max_pixels: images above this many pixels are refused (None: no limit).
    dim_fraction: on clean images, crystals dimmer than the threshold are still found down to this
        fraction of the way from the matrix level to it (module doc, step 5): particles lower in
        the field or in another's shadow; None: not sought.
    dim_join: a dim region joins the crystal it touches when the mean gradient along their shared
        boundary is below this fraction of the outline's median gradient (no brightness step: the
        dim part of one crystal, not a dim crystal behind a bright one).
    step_contrast: regions inside a segmented crystal whose mean greys differ by at least this
        fraction of the dim-crystal contrast (lowest four-class threshold minus matrix level) are
        separate brightness plateaus, and a plateau smaller and dimmer than the one it borders most
        is a crystal of its own (module doc, step 6): a particle lower in the field, partly behind
        the bright one in front, leaves the distance transform no neck. Clean images only; None:
        not split.
    join_step: neighbouring instances are joined where the mean gradient along the line between
        them is below this fraction of the outline's median gradient, their greys are close, the
        line has no neck and their union is convex (module doc, end of step 4): the seeds cut
        flat, elongated or cupped crystals, which have several distance-transform peaks, into
        pieces with no step between them. Needs the "multiotsu" threshold (its levels are the grey
        scale); None: not joined.
    """

    def __init__(self, min_crystal_px: float | None = None, max_crystal_px: float | None = None,
                 size_prior: bool = False, edge_cut: float | None = 1.0, threshold: str = "multiotsu", polarity: str = "bright",
                 split_ratio: float = 0.1, neck_scale: float = 1.0,
                 seed_spacing: float = 1.25, smoothing: float | None = None, block_size: int | None = None,
                 max_hole_px: int | None = None, edge_weight: float = 5.0, cut_relief: float = 0.5,
                 work_min_px: float | None = 12.0,
                 preprocessor=None, max_pixels: int | None = MAX_IMAGE_PIXELS,
                 dim_fraction: float | None = 0.5, dim_join: float = 0.3,
                 step_contrast: float | None = 0.5, join_step: float | None = 0.5):
        self.min_crystal_px = min_crystal_px
        self.max_crystal_px = max_crystal_px
        self.size_prior = size_prior
        self.edge_cut = edge_cut
        self.threshold = threshold
        self.polarity = polarity
        self.split_ratio = split_ratio
        self.neck_scale = neck_scale
        self.seed_spacing = seed_spacing
        self.smoothing = smoothing
        self.block_size = block_size
        self.max_hole_px = max_hole_px
        self.edge_weight = edge_weight
        self.cut_relief = cut_relief
        self.work_min_px = work_min_px
        self.preprocessor = preprocessor
        self.max_pixels = max_pixels
        self.dim_fraction = dim_fraction
        self.dim_join = dim_join
        self.step_contrast = step_contrast
        self.join_step = join_step

    @classmethod
    def for_pixel_size(cls, pixel_size_nm: float, crystal_size_nm: tuple[float, float] | None = None,
                       **params) -> "ClassicalSegmenter":
        """A segmenter for crystals of `crystal_size_nm` = (min, max) diameters in nm at this pixel
        size: the smallest and largest worth measuring, e.g. the 5th and 95th percentile diameters
        (`min_crystal_px`). Without a crystal size, the carbonate range where it fits each image
        (module doc); with an unknown (NaN) pixel size, the range is estimated on each image."""
        if math.isfinite(pixel_size_nm) and pixel_size_nm > 0:
            params["size_prior"] = crystal_size_nm is None
            low, high = CARBONATE_CRYSTAL_SIZE_NM if crystal_size_nm is None else crystal_size_nm
            params["min_crystal_px"], params["max_crystal_px"] = low / pixel_size_nm, high / pixel_size_nm
        return cls(**params)

    def _validate(self, image: np.ndarray) -> np.ndarray:
        if self.threshold not in THRESHOLDS:
            raise ValueError(f"threshold must be one of {THRESHOLDS}; got {self.threshold!r}")
        if self.polarity not in ("bright", "dark"):
            raise ValueError(f"polarity must be 'bright' or 'dark'; got {self.polarity!r}")
        if self.min_crystal_px is not None and self.min_crystal_px <= 0:
            raise ValueError(f"min_crystal_px must be > 0; got {self.min_crystal_px}")
        if not 0 < self.split_ratio < 1:
            raise ValueError(f"split_ratio must be in (0, 1); got {self.split_ratio}")
        if self.step_contrast is not None and not self.step_contrast > 0:
            raise ValueError(f"step_contrast must be > 0 or None; got {self.step_contrast}")
        if self.join_step is not None and not self.join_step > 0:
            raise ValueError(f"join_step must be > 0 or None; got {self.join_step}")
        if self.dim_fraction is not None and not 0 < self.dim_fraction < 1:
            raise ValueError(f"dim_fraction must be in (0, 1) or None; got {self.dim_fraction}")
        if not self.seed_spacing > 0:
            raise ValueError(f"seed_spacing must be > 0; got {self.seed_spacing}")
        if not 0 <= self.cut_relief <= 1:
            raise ValueError(f"cut_relief must be in [0, 1]; got {self.cut_relief}")
        image = np.asarray(image)
        if image.ndim != 2:
            raise ValueError(f"segment expects a 2-D grey image; got shape {image.shape}")
        check_image_size(image.shape, self.max_pixels)
        if image.size == 0 or np.ptp(image) == 0:  # multi-Otsu has no threshold to find
            raise DataError("blank image (a single grey level): nothing to segment")
        return image.astype(np.float32, copy=False)

    def _range_given(self) -> bool:
        """The size range is the user's (not estimated, nor a default used only where it fits)."""
        return self.min_crystal_px is not None and not self.size_prior

    def crystal_size_px(self, image: np.ndarray) -> tuple[float, float | None]:
        """The (min, max) crystal diameters in px used on `image`: as given, else the smallest is
        estimated; an estimated largest is not used to drop instances (an unsplit clump would lose
        its crystals' area too). A default range (`size_prior`) is used only on images whose
        typical (area-weighted) crystal is at least PRIOR_MARGIN times its minimum and not above
        its maximum: a default minimum closer to the typical size would drop a large share of the
        image's crystals (15-40 px particles at a pixel size where the carbonate minimum is 25 px)."""
        if self._range_given():
            return float(self.min_crystal_px), self.max_crystal_px
        low, high = estimate_crystal_size_px(image, self.polarity)
        if self.min_crystal_px is None:
            return low, self.max_crystal_px
        typical = math.sqrt(low * high)
        upper = self.max_crystal_px if self.max_crystal_px is not None else math.inf
        if PRIOR_MARGIN * self.min_crystal_px <= typical <= upper:
            return float(self.min_crystal_px), self.max_crystal_px
        warnings.warn(f"typical crystal {typical:.0f} px does not fit the default size range "
                      f"{self.min_crystal_px:.0f}-{upper:.0f} px; using the image's own estimate "
                      f"(give --crystal-size-nm to set it)", ScaleWarning, stacklevel=2)
        return low, None

    def _prepare(self, image: np.ndarray) -> tuple[np.ndarray, float, float | None, int, float]:
        """Preprocessed image at working resolution, the pipeline's scale there (`_scale_px`), the
        largest crystal there, the block factor, and the smallest crystal there (the area filter)."""
        image = self._validate(image)
        if self.preprocessor is not None:
            image = np.asarray(self.preprocessor(image), np.float32)
        low, high = self.crystal_size_px(image)
        scale = self._scale_px(image, low, high)
        block = max(1, int(scale // self.work_min_px)) if self.work_min_px else 1
        image = _block_reduce(image, block, np.mean)
        return image, scale / block, None if high is None else high / block, block, low / block

    def _scale_px(self, image: np.ndarray, low: float, high: float | None) -> float:
        """The length (px) the smoothing, hole filling, seeds and working resolution scale with: the
        smallest crystal of an estimated or default range; with a range the user gave, the same
        estimate's smallest crystal (typical / SIZE_SPREAD), its typical size held inside the given
        range, at least GIVEN_SCALE_FLOOR of the given minimum and at most the given minimum. That
        length is not the smallest crystal of the image: it is one SIZE_SPREAD-th of the crystals
        that make up most of the area, which the constants (`seed_spacing`, 1/8 smoothing, 8x holes)
        were set for; a true minimum of touching crystals is about one seed window, too coarse to
        split them (15-40 px touching particles with their true 13-41 px range given: F1 0.73 with
        the range estimated, 0.46 with the given minimum as the length)."""
        if not self._range_given():
            return low
        typical = _area_weighted_median(crystal_widths_px(image, self.polarity))
        typical = min(max(typical, low), math.inf if high is None else high)
        return min(low, max(_range_around(typical)[0], GIVEN_SCALE_FLOOR * low))

    def _smooth(self, image: np.ndarray, low: float, block: int) -> tuple[np.ndarray, float, float]:
        """Gaussian at 1/8 of the smallest crystal, or more where the image's noise needs it
        (`denoising_sigma_px`); the sd of the noise left after it; and its sigma."""
        noise = pixel_noise(image)
        if self.smoothing is not None:
            sigma = self.smoothing / block
        else:
            sigma = max(low / 8, denoising_sigma_px(image, noise))
        smooth = filters.gaussian(image, sigma=sigma) if sigma > 0 else image
        return smooth, smoothed_noise(noise, sigma), sigma

    def _brightness(self, smooth: np.ndarray, noise: float) -> tuple[np.ndarray, tuple | None]:
        """The smoothed image with crystals bright, and its `multiotsu_levels` (None unless the
        threshold is "multiotsu"): computed once per image for the mask and steps 5 and 6."""
        bright = smooth.max() - smooth if self.polarity == "dark" else smooth
        return bright, multiotsu_levels(bright, noise) if self.threshold == "multiotsu" else None

    def _mask(self, smooth: np.ndarray, levels: tuple | None, noise: float, low: float, block: int) -> np.ndarray:
        """Crystal mask of `smooth` (crystals bright; `levels` from `_brightness`): the chosen
        threshold, but never within SIGNIFICANCE residual-noise sd of the matrix level
        (`matrix_level`): on an image of one crystal class the lower multi-Otsu threshold can fall
        inside the matrix's own grey range. "multiotsu" takes the lowest of four classes where it
        is DIM_SIGNIFICANCE sd clear of the matrix."""
        if self.threshold == "otsu":
            fg = smooth > filters.threshold_otsu(smooth)
        elif self.threshold == "li":
            fg = smooth > filters.threshold_li(smooth)
        elif self.threshold == "multiotsu":
            otsu = filters.threshold_otsu(smooth)
            matrix, level, dim = levels
            level = level if dim is None else dim
            fg = smooth > min(max(level, matrix + SIGNIFICANCE * noise), otsu)
        else:
            size = self.block_size / block if self.block_size else 4 * low
            fg = smooth > filters.threshold_local(smooth, block_size=int(size) // 2 * 2 + 1, method="mean")
        min_area = int(np.pi / 4 * low ** 2)
        max_hole = self.max_hole_px / block ** 2 if self.max_hole_px is not None else 8 * min_area
        fg = morphology.remove_small_holes(fg, max_size=int(max_hole))
        return morphology.remove_small_objects(fg, max_size=min_area)

    def foreground(self, image: np.ndarray) -> np.ndarray:
        """Boolean crystal mask at full resolution (steps 1-3 of the module doc)."""
        shape = np.shape(image)
        work, low, _, block, _ = self._prepare(image)
        smooth, noise, _ = self._smooth(work, low, block)
        bright, levels = self._brightness(smooth, noise)
        return _upsample(self._mask(bright, levels, noise, low, block), block, shape)

    def _smallest_kept(self, low: float, sigma: float, smallest: float) -> float:
        """Diameter (working px) of the smallest instance kept: where the range is the user's, its
        smallest crystal `smallest` less OUTLINE_ERROR_PX; else the smallest crystal `low`, and at
        least RESOLVED_SIGMAS x the smoothing `sigma` (noisy 11-40 px particles, where the estimate
        reaches its 4 px floor: the pieces a seed spacing of 5 px cuts are dropped)."""
        if self._range_given():
            return max(smallest - OUTLINE_ERROR_PX, 0.0)
        return max(low, RESOLVED_SIGMAS * sigma)

    def _seeds(self, dist: np.ndarray, low: float, whole: np.ndarray | None = None) -> np.ndarray:
        """Labelled watershed seeds (module doc, step 4): distance-transform peaks highest within
        `seed_spacing` x the smallest crystal, and h-maxima of log(1 + d / c) on a grid of blocks
        ~1/4 of the smallest crystal; a seed inside the largest inscribed disc of a deeper one, or
        on the same top, is dropped. The discs are measured on `whole` (the uncut mask's distance
        transform; default `dist`)."""
        relief = filters.gaussian(dist, sigma=SEED_SMOOTHING)
        peaks = feature.peak_local_max(relief, min_distance=max(1, round(self.seed_spacing * low)),
                                       threshold_abs=1.0, exclude_border=False)
        tops = ndi.label(morphology.h_maxima(relief, SEED_DEPTH_PX), structure=np.ones((3, 3)))[0]
        top = tops[peaks[:, 0], peaks[:, 1]]
        peaks = peaks[np.unique(top, return_index=True)[1]][np.unique(top) > 0]  # one per plateau
        grid = max(1, int(low // 4))
        coarse = _block_reduce(dist, grid, np.max)
        necks, n = ndi.label(morphology.h_maxima(np.log1p(coarse / (self.neck_scale * low)),
                                                 -math.log1p(-self.split_ratio)), structure=np.ones((3, 3)))
        necks = _upsample(necks, grid, dist.shape) * (dist > 0)
        at = np.array(ndi.maximum_position(dist, necks, np.arange(1, n + 1)), int).reshape(-1, 2)
        points = np.concatenate([peaks, at])
        depth = (dist if whole is None else whole)[points[:, 0], points[:, 1]]
        order = np.argsort(-depth, kind="stable")
        points, depth = points[order], depth[order]
        top = tops[points[:, 0], points[:, 1]]
        keep = np.ones(len(points), bool)
        for i, near in enumerate(cKDTree(points).query_ball_point(points, depth)):
            if keep[i]:
                keep[[j for j in near if j > i]] = False
                if top[i]:  # one seed per top of the distance map (the ridge of an elongated crystal)
                    keep[i + 1:][top[i + 1:] == top[i]] = False
        seeds = np.zeros(dist.shape, np.int32)
        seeds[points[keep, 0], points[keep, 1]] = np.arange(1, keep.sum() + 1)
        return seeds

    def _relief(self, dist: np.ndarray, cut_dist: np.ndarray, grad: np.ndarray, low: float) -> np.ndarray:
        """Watershed relief (module doc, step 4): minus the distance to the matrix, a `cut_relief`
        share of it measured in the mask cut along occluding edges (where the seeds were found),
        plus `edge_weight` x the normalised intensity gradient."""
        relief = -((1 - self.cut_relief) * dist + self.cut_relief * cut_dist)
        if self.edge_weight:
            relief += self.edge_weight * low * grad / max(float(grad.max()), 1e-9)
        return relief

    def _dim_mask(self, bright: np.ndarray, levels: tuple | None, fg: np.ndarray, low: float) -> np.ndarray:
        """Dim crystals outside `fg` (module doc, step 5); none unless the image is clean enough for
        the four-class threshold (DIM_SIGNIFICANCE)."""
        none = np.zeros_like(fg)
        if self.dim_fraction is None or levels is None or levels[2] is None or not fg.any():
            return none
        matrix, _, level = levels
        dim = (bright > matrix + self.dim_fraction * (level - matrix)) & ~fg
        dim = ndi.binary_opening(dim, morphology.disk(max(1, round(DIM_OPENING * low))))
        min_area = int(np.pi / 4 * low ** 2)
        dim = morphology.remove_small_holes(dim, max_size=8 * min_area)
        smallest = int(np.pi / 4 * self._smallest_dim(low) ** 2)
        return morphology.remove_small_objects(dim, max_size=smallest) & ~fg

    def _smallest_dim(self, low: float) -> float:
        """Diameter (working px) of the smallest dim crystal sought (step 5): the smallest crystal
        where the range is the user's, else down to MIN_ESTIMATE_PX (outline test SMALL_DIM_EDGE)."""
        if self._range_given():
            return low
        return min(low, MIN_ESTIMATE_PX)

    def _split_dim_plateaus(self, labels: np.ndarray, bright: np.ndarray, levels: tuple | None, grad: np.ndarray,
                            edge: float, low: float) -> np.ndarray:
        """Dim crystals merged into a brighter one (module doc, step 6) as labels of their own; none
        unless the image is clean enough for the four-class threshold (DIM_SIGNIFICANCE)."""
        if self.step_contrast is None or levels is None or levels[2] is None or not labels.any():
            return labels
        matrix, _, level = levels
        mask = labels > 0
        plateau = brightness_plateaus(bright, grad, mask, STEP_CORE * edge, self.step_contrast * (level - matrix),
                                      np.pi / 4 * (DIM_OPENING * low) ** 2)
        n = int(plateau.max()) + 1
        area = np.bincount(plateau.ravel(), minlength=n)
        mean = np.bincount(plateau.ravel(), bright.ravel(), n) / np.maximum(area, 1)
        a, b = _neighbours(plateau)
        host = _most_shared(np.concatenate([a, b]), np.concatenate([b, a]), n)  # longest shared boundary
        seam = np.zeros_like(mask)
        seam[:, :-1] |= plateau[:, :-1] != plateau[:, 1:]
        seam[:-1, :] |= plateau[:-1, :] != plateau[1:, :]
        inner = ndi.distance_transform_edt(mask & ~seam)
        core = inner >= STEP_DISC * low
        dim_level = level if self.dim_fraction is None else matrix + self.dim_fraction * (level - matrix)
        own = (host > 0) & (mean < mean[host]) & (area < area[host])  # lower, or behind the one it borders
        own &= np.bincount(plateau[core], minlength=n) > 0  # holds a STEP_DISC disc
        own &= mean > dim_level  # a crystal, not a filled hole of matrix between crystals
        own &= mean - matrix < STEP_DIMMER * (mean[host] - matrix)  # clearly dimmer: not a shaded side
        own &= np.bincount(plateau[mask & ~ndi.binary_erosion(mask)], minlength=n) >= low  # an outline: no pit
        label = _most_shared(plateau[mask], labels[mask], n)  # the label holding most of it
        shared = np.bincount(plateau[mask], labels[mask] == label[plateau[mask]], n)
        own &= shared < np.bincount(labels.ravel())[label] / 2  # not (most of) a label of its own already
        found = np.flatnonzero(own)
        if found.size:  # another crystal's centre cannot lie inside a crystal's largest inscribed disc
            whole = ndi.distance_transform_edt(mask)
            centre, host_centre = _deepest(inner, plateau, found), _deepest(whole, labels, label[found])
            radius = whole.ravel()[host_centre]
            own[found] = np.hypot(*np.subtract(np.unravel_index(centre, mask.shape),
                                               np.unravel_index(host_centre, mask.shape))) >= radius
        ids = np.zeros(n, np.int64)
        ids[own] = int(labels.max()) + 1 + np.arange(int(own.sum()))
        return np.where(ids[plateau] > 0, ids[plateau], labels)

    def _join_cut_crystals(self, labels: np.ndarray, bright: np.ndarray, levels: tuple | None, grad: np.ndarray,
                           edge: float, low: float, high: float | None) -> np.ndarray:
        """Neighbouring instances that are pieces of one crystal joined (module doc, end of step 4): no
        brightness step on the line between them (mean gradient below `join_step` of the outline's,
        greys within SAME_GREY), no neck there (JOIN_NECK), and together as convex as one crystal
        (JOIN_DEFECT) and not above the largest crystal."""
        if self.join_step is None or levels is None or not labels.any():
            return labels
        matrix, three, four = levels
        lo, hi, length, mean = _boundary_steps(labels, grad)
        n = int(labels.max()) + 1
        area = np.bincount(labels.ravel(), minlength=n)
        grey = np.bincount(labels.ravel(), bright.ravel(), n) / np.maximum(area, 1)
        weak = (mean < self.join_step * edge)
        weak &= np.abs(grey[lo] - grey[hi]) < SAME_GREY * ((three if four is None else four) - matrix)
        if not weak.any():
            return labels
        lo, hi, length = lo[weak], hi[weak], length[weak]
        box = dict(enumerate(ndi.find_objects(labels), 1))
        width = np.zeros(n)  # each piece's width: the diameter of its largest inscribed disc
        for p in np.unique(np.concatenate([lo, hi])):
            width[p] = 2 * ndi.distance_transform_edt(np.pad(labels[box[p]] == p, 1)).max()
        first, last = np.full((2, len(lo)), np.inf), np.full((2, len(lo)), -np.inf)  # bounding box of each line
        for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
            key = np.minimum(a, b).astype(np.int64) * n + np.maximum(a, b)
            at = np.flatnonzero(np.isin(key, lo * n + hi))
            k = np.searchsorted(lo * n + hi, key.ravel()[at])
            for axis, value in enumerate(np.divmod(at, a.shape[1])):
                np.minimum.at(first[axis], k, value)
                np.maximum.at(last[axis], k, value)
        chord = np.hypot(*(last - first + 1))  # the line's extent: the diagonal of that box
        own = chord >= JOIN_NECK * np.minimum(width[lo], width[hi])
        largest = np.inf if high is None else np.pi / 4 * high ** 2
        root = np.arange(n)
        for k in np.flatnonzero(own)[np.argsort(-length[own], kind="stable")]:
            a, b = root[lo[k]], root[hi[k]]
            if a == b or area[a] + area[b] > largest:
                continue
            both = tuple(slice(min(p.start, q.start), max(p.stop, q.stop)) for p, q in zip(box[a], box[b]))
            if _concavity(np.isin(root[labels[both]], (a, b))) < JOIN_DEFECT * low:
                root[root == b] = a
                area[a] += area[b]
                box[a] = both
        return root[labels]

    def segment(self, image: np.ndarray) -> np.ndarray:
        """uint16 instance labels (0 = matrix) of a 2-D grey image in [0, 1]."""
        shape = np.shape(image)
        work, low, high, block, smallest = self._prepare(image)
        smooth, noise, sigma = self._smooth(work, low, block)
        bright, levels = self._brightness(smooth, noise)
        fg = self._mask(bright, levels, noise, low, block)
        grad = filters.sobel(smooth)
        edge = float(np.median(grad[fg & ~ndi.binary_erosion(fg)])) if fg.any() else 0.0  # outline gradient
        cut = fg
        if self.edge_cut is not None and fg.any():
            cut = fg & (grad < self.edge_cut * edge)
        dist = ndi.distance_transform_edt(fg)
        cut_dist = ndi.distance_transform_edt(cut) if cut is not fg else dist
        dim = self._dim_mask(bright, levels, fg, low)
        dim_dist = ndi.distance_transform_edt(dim)  # seeded in one pass with the crystal mask (speed)
        seeds = self._seeds(cut_dist + dim_dist, low, dist + dim_dist)
        labels = segmentation.watershed(self._relief(dist, cut_dist, grad, low), np.where(fg, seeds, 0), mask=fg)
        if dim.any():
            found = segmentation.watershed(self._relief(dim_dist, dim_dist, grad, low), np.where(dim, seeds, 0),
                                           mask=dim)
            first = int(seeds.max()) + 1
            at = dim & ~ndi.binary_erosion(dim)
            n = int(found.max()) + 1
            rim = np.bincount(found[at], grad[at], n) / np.maximum(np.bincount(found[at], minlength=n), 1)
            small = np.bincount(found.ravel(), minlength=n) < np.pi / 4 * low ** 2
            small &= self._smallest_dim(low) < low  # where smaller dim crystals are sought
            found = np.where(rim[found] >= np.where(small, SMALL_DIM_EDGE, DIM_EDGE)[found] * edge, found, 0)
            labels = _join_across_weak_boundaries(np.where(found > 0, found + first - 1, labels), first, grad,
                                                  self.dim_join * edge)
        labels = self._join_cut_crystals(labels, bright, levels, grad, edge, low, high)
        labels = self._split_dim_plateaus(labels, bright, levels, grad, edge, low)
        min_area = int(np.pi / 4 * self._smallest_kept(low, sigma, smallest) ** 2)
        largest = None if high is None else high if self.size_prior else CLUMP_FACTOR * high  # a clump beyond
        max_area = None if largest is None else int(np.pi / 4 * largest ** 2)
        if dim.any() and not self._range_given():  # dim crystals below the smallest passed their outline test
            labels = np.where((np.bincount(labels.ravel()) < min_area)[labels] & (labels < first), 0, labels)
            min_area = min(min_area, int(np.pi / 4 * self._smallest_dim(low) ** 2))
        labels = filter_labels(labels, min_area, max_area)
        return _upsample(labels, block, shape)
