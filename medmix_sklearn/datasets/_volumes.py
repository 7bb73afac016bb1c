"""Phantom CT volumes: spheres of known density in a box of soft tissue."""

from __future__ import annotations

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["make_phantom_volume"]


def make_phantom_volume(
    shape=(64, 64, 64),
    spacing=(1.5, 1.5, 1.5),
    *,
    spheres=(),
    box_hu=40.0,
    air_hu=-1000.0,
    margin=0.1,
    noise_sd=0.0,
    random_state=None,
):
    """A CT-like phantom in Hounsfield units: spheres in a box of tissue in air.

    Parameters
    ----------
    shape : tuple of 3 int, default=(64, 64, 64)
        Voxels along (z, y, x).
    spacing : tuple of 3 float, default=(1.5, 1.5, 1.5)
        Voxel size in mm along (z, y, x).
    spheres : sequence of (center, radius, hu), default=()
        Each sphere's centre in mm from the volume's first voxel centre, as
        (z, y, x), its radius in mm and its density in HU. Later spheres
        paint over earlier ones.
    box_hu : float, default=40.0
        Density of the box (soft tissue).
    air_hu : float, default=-1000.0
        Density outside the box.
    margin : float, default=0.1
        Fraction of each side left as air around the box.
    noise_sd : float, default=0.0
        Standard deviation of Gaussian noise added to every voxel, in HU.
    random_state : int, RandomState instance or None, default=None
        Seeds the noise.

    Returns
    -------
    volume : ndarray of shape ``shape``, dtype float32
        Intensities in HU, in (z, y, x) patient axes.

    Examples
    --------
    >>> from medmix_sklearn.datasets import make_phantom_volume
    >>> v = make_phantom_volume((32, 32, 32), (2.0, 2.0, 2.0), spheres=[((32, 32, 32), 8, 300)])
    >>> float(v[16, 16, 16]), float(v[0, 0, 0]), float(v[16, 4, 16])
    (300.0, -1000.0, 40.0)
    """
    shape = tuple(int(n) for n in shape)
    spacing = np.asarray(spacing, dtype=np.float64)
    if len(shape) != 3 or min(shape) < 1 or spacing.shape != (3,) or np.any(spacing <= 0):
        raise ValueError(
            f"shape must be 3 positive ints and spacing 3 positive floats. Got shape="
            f"{shape!r}, spacing={tuple(spacing)!r}."
        )
    if not 0.0 <= margin < 0.5:
        raise ValueError(f"margin must be in [0, 0.5). Got {margin!r}.")
    volume = np.full(shape, float(air_hu), dtype=np.float32)
    box = tuple(slice(int(round(n * margin)), n - int(round(n * margin))) for n in shape)
    volume[box] = float(box_hu)
    grid = np.meshgrid(*(np.arange(n) * s for n, s in zip(shape, spacing)), indexing="ij")
    for center, radius, hu in spheres:
        distance2 = sum((g - float(c)) ** 2 for g, c in zip(grid, center))
        volume[distance2 <= float(radius) ** 2] = float(hu)
    if noise_sd > 0:
        rng = check_random_state(random_state)
        volume += rng.normal(0.0, float(noise_sd), size=shape).astype(np.float32)
    return volume
