"""Registration: where each target pixel lands on its photograph, without the blur biasing it.

Geometry model (:class:`Geometry`): a photo pixel ``p`` is first undistorted by a radial/tangential
model about the frame centre (OpenCV's ``k1, k2, p1, p2``, in coordinates normalised by the half
diagonal), then mapped to the target by a homography. It is the map a resampler needs (photo grid →
target coordinates), so the same model renders the synthetic photographs and warps targets.

Steps (:func:`coarse_geometry`, then :func:`refine`; ``calibrate.prepare.register_pose`` runs both):

1. Coarse: ArUco markers of a calibration chart (large cells: their detection and centres survive a
   30-px blur) matched by id to the chart's layout, or SIFT + RANSAC for targets without a layout.
2. Fine (:func:`refine_geometry`): Gauss-Newton on the geometry, comparing the photograph with the
   warped target *blurred like the photo*: by the current PSF estimate when one is given (then the
   PSF's own centroid no longer pulls the geometry), and in any case by the same heavy Gaussian
   low-pass on both sides, where the residual PSF differences fade. A per-tile residual shift decides
   whether the homography is enough; if not (``distortion="auto"``) the distortion terms are added.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import cv2
import numpy as np
import torch

from degtrans.calibrate.sensor import TargetModel, area_sample
from degtrans.calibrate.targets import MARKERS_PER_CHART, Layout, aruco_dictionary
from degtrans.errors import DegtransError


class RegistrationError(DegtransError):
    """A pair that cannot be registered (too few inliers, degenerate homography, wrong target)."""


@dataclass(frozen=True)
class Geometry:
    """Photo pixel → target pixel: ``t = H^-1 (undistort(p))`` (OpenCV convention, pixel centres at integers).

    Attributes:
        homography: (3, 3) target pixel → ideal photo pixel.
        distortion: (4,) ``k1, k2, p1, p2`` of ``undistort``; zeros for a pure homography.
        frame: (H, W) of the photograph (fixes the distortion's centre and radius).
    """

    homography: np.ndarray
    frame: tuple[int, int]
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(4))

    def undistort(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Photo pixel coordinates → ideal (distortion-free) photo coordinates."""
        k1, k2, p1, p2 = (float(v) for v in self.distortion)
        if k1 == k2 == p1 == p2 == 0.0:
            return x, y
        cx, cy, radius = _centre_radius(self.frame)
        qx, qy = (x - cx) / radius, (y - cy) / radius
        r2 = qx * qx + qy * qy
        radial = 1.0 + k1 * r2 + k2 * r2 * r2
        ux = qx * radial + 2 * p1 * qx * qy + p2 * (r2 + 2 * qx * qx)
        uy = qy * radial + p1 * (r2 + 2 * qy * qy) + 2 * p2 * qx * qy
        return cx + radius * ux, cy + radius * uy

    def target_coords(self, step: int = 1) -> np.ndarray:
        """(H', W', 2) float32 target (x, y) of every ``step``-th photo pixel."""
        height, width = self.frame
        gy, gx = np.mgrid[0:height:step, 0:width:step].astype(np.float64)
        return self.map_points(gx, gy)

    def map_points(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Photo points (any shape) → (..., 2) target (x, y)."""
        ux, uy = self.undistort(x, y)
        g = np.linalg.inv(self.homography)
        w = g[2, 0] * ux + g[2, 1] * uy + g[2, 2]
        tx = (g[0, 0] * ux + g[0, 1] * uy + g[0, 2]) / w
        ty = (g[1, 0] * ux + g[1, 1] * uy + g[1, 2]) / w
        return np.stack([tx, ty], axis=-1).astype(np.float32)


def local_device() -> str:
    """Where this process blurs and area-samples for registration: its GPU when it sees one."""
    return "cuda" if torch.cuda.is_available() else "cpu"


def _centre_radius(frame: tuple[int, int]) -> tuple[float, float, float]:
    height, width = frame
    return (width - 1) / 2.0, (height - 1) / 2.0, float(np.hypot(height, width)) / 2.0


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] → (H, W) float32 luminance."""
    return np.ascontiguousarray(image[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32))


def _to_u8(gray: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(gray, [0.5, 99.5])
    return np.clip((gray - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)


def detect_markers(photo: np.ndarray, layout: Layout) -> dict[int, np.ndarray]:
    """ArUco markers in ``photo`` (H, W, 3): ``{id: (4, 2) corners (x, y)}`` of every detected id.

    The photo is normalised to 8 bits; a blurred photo is tried again at half resolution, where the
    marker cells are sharper relative to the detector's thresholding windows.
    """
    gray = _to_u8(to_gray(photo))
    params = cv2.aruco.DetectorParameters()
    params.adaptiveThreshWinSizeMax = 53
    params.adaptiveThreshWinSizeStep = 8
    detector = cv2.aruco.ArucoDetector(aruco_dictionary(layout.dictionary), params)
    found: dict[int, np.ndarray] = {}
    for scale in (1.0, 0.5, 0.25):
        image = (
            gray if scale == 1.0 else cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        )
        if min(image.shape) < 64:
            break
        corners, ids, _ = detector.detectMarkers(image)
        for marker_id, quad in zip([] if ids is None else ids.ravel(), corners, strict=True):
            # Corners of a downscaled image, back in full-resolution pixel centres.
            found.setdefault(int(marker_id), (quad.reshape(4, 2) + 0.5) / scale - 0.5)
    return found


def markers_homography(photo: np.ndarray, layout: Layout, min_markers: int = 4) -> tuple[np.ndarray, int]:
    """Target → photo homography from the chart's markers; raises when the chart is not seen.

    Raises:
        RegistrationError: too few markers of this chart: ``"wrong target"`` when another chart's marker
            set is seen instead (at least ``min_markers`` ids of one other chart), else ``"chart
            markers not found"`` (a blurred photo makes the detector report a few stray ids, which are
            no chart).
    """
    expected = {m.id: np.asarray(m.corners, np.float64) for m in layout.markers}
    found = detect_markers(photo, layout)
    mine = sorted(set(found) & set(expected))
    needed = min(min_markers, len(expected))
    if len(mine) < needed:
        others = sorted(set(found) - set(expected))
        charts: dict[int, list[int]] = {}
        for marker_id in others:
            charts.setdefault(marker_id // MARKERS_PER_CHART, []).append(marker_id)
        other_chart = max(charts.values(), key=len, default=[])
        if len(other_chart) >= needed:
            raise RegistrationError(
                f"wrong target: markers {other_chart} belong to another chart (expected {sorted(expected)})"
            )
        raise RegistrationError(
            f"chart markers not found: {len(mine)} of the chart's {len(expected)} markers detected"
            f" (at least {needed} needed{'; stray ids ' + str(others) if others else ''}):"
            " the photo is out of focus or does not show the chart"
        )
    src = np.concatenate([expected[i] for i in mine]).astype(np.float32)
    dst = np.concatenate([found[i] for i in mine]).astype(np.float32)
    # A generous threshold: lens distortion moves corners by several pixels from any homography.
    homography, inliers = cv2.findHomography(src, dst, cv2.RANSAC, 12.0)
    if homography is None:
        raise RegistrationError("markers do not determine a homography")
    return homography / homography[2, 2], int(inliers.sum())


def match_homography(target: np.ndarray, photo: np.ndarray, min_inliers: int = 30) -> tuple[np.ndarray, int]:
    """SIFT + ratio test + RANSAC on low-passed images: a rough target → photo homography and its inliers."""
    sift = cv2.SIFT_create(nfeatures=4000)
    kp_t, des_t = sift.detectAndCompute(_to_u8(to_gray(target)), None)
    kp_p, des_p = sift.detectAndCompute(_to_u8(to_gray(photo)), None)
    if des_t is None or des_p is None or len(kp_t) < 4 or len(kp_p) < 4:
        raise RegistrationError(
            f"too few features (target {len(kp_t) if kp_t else 0}, photo {len(kp_p) if kp_p else 0})"
        )
    matches = cv2.BFMatcher(cv2.NORM_L2).knnMatch(des_t, des_p, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < 0.75 * m[1].distance]
    if len(good) < max(4, min_inliers):
        raise RegistrationError(f"too few feature matches ({len(good)} < {min_inliers})")
    src = np.float32([kp_t[m.queryIdx].pt for m in good])
    dst = np.float32([kp_p[m.trainIdx].pt for m in good])
    homography, inlier_mask = cv2.findHomography(src, dst, cv2.RANSAC, 3.0, maxIters=5000, confidence=0.999)
    inliers = int(inlier_mask.sum()) if inlier_mask is not None else 0
    if homography is None or inliers < min_inliers:
        raise RegistrationError(f"too few RANSAC inliers ({inliers} < {min_inliers})")
    return homography, inliers


def check_homography(
    homography: np.ndarray, target_size: tuple[int, int], photo_size: tuple[int, int]
) -> None:
    """Raise ``RegistrationError`` for a degenerate homography (fold, extreme scale, strong tilt)."""
    h = homography / homography[2, 2]
    det = float(np.linalg.det(h[:2, :2]))
    scale = (photo_size[0] * photo_size[1]) / (target_size[0] * target_size[1])
    if not np.isfinite(h).all() or det <= 0 or not (0.05 * scale < det < 20 * scale):
        raise RegistrationError(f"degenerate homography (det {det:.3g}, expected near {scale:.3g})")
    if np.abs(h[2, :2]).max() * max(target_size) > 0.5:
        raise RegistrationError("degenerate homography (perspective too strong)")


def _centre_jacobian(homography: np.ndarray, target_size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """The homography normalised to ``w = 1`` at the target's centre, and its (2, 2) Jacobian there."""
    th, tw = target_size
    centre = np.array([(tw - 1) / 2, (th - 1) / 2, 1.0])
    h = homography / float(homography[2] @ centre)
    x, y, _ = h @ centre
    return h, h[:2, :2] - np.outer([x, y], h[2, :2])


def magnification(homography: np.ndarray, target_size: tuple[int, int]) -> float:
    """Photo pixels per target pixel at the target's centre (geometric mean over directions)."""
    _, jac = _centre_jacobian(homography, target_size)
    return float(np.sqrt(abs(np.linalg.det(jac))))


def tilt_degrees(homography: np.ndarray, target_size: tuple[int, int], photo_size: tuple[int, int]) -> float:
    """How far the chart's plane is turned from facing the camera, in degrees.

    For a plane tilted by ``a`` seen by a pinhole camera of focal length ``f`` (pixels), the homography's
    perspective term ``w = h31 u + h32 v + 1`` (normalised to 1 at the chart's centre) changes by
    ``sin a / f`` per pixel of magnification along the untilted direction: ``sin a = f |grad w| / m``.
    The focal length is not known; a typical lens's half-diagonal field of view, 30 degrees, gives it.
    """
    h, jac = _centre_jacobian(homography, target_size)
    largest = float(np.linalg.svd(jac, compute_uv=False)[0])
    focal = float(np.hypot(*photo_size)) / 2 / np.tan(np.radians(30.0))
    sin_tilt = focal * float(np.hypot(*h[2, :2])) / largest
    return float(np.degrees(np.arcsin(min(1.0, sin_tilt))))


# Render the warped target as the camera would see it: (H, W) warped target → (H, W) (e.g. the PSF blur).
Render = Callable[[np.ndarray], np.ndarray]


def _frame_corners(frame: tuple[int, int]) -> np.ndarray:
    height, width = frame
    return np.array([[0, 0], [width - 1, 0], [width - 1, height - 1], [0, height - 1]], np.float64)


def _to_params(geometry: Geometry) -> np.ndarray:
    """Parameters in pixel units: the target (x, y) of the 4 frame corners, then ``radius * distortion``."""
    corners = _frame_corners(geometry.frame)
    mapped = Geometry(geometry.homography, geometry.frame).map_points(*corners.T).astype(np.float64)
    _, _, radius = _centre_radius(geometry.frame)
    return np.concatenate([mapped.ravel(), radius * np.asarray(geometry.distortion, np.float64)])


def _from_params(params: np.ndarray, frame: tuple[int, int]) -> Geometry:
    corners = _frame_corners(frame).astype(np.float32)
    to_target = cv2.getPerspectiveTransform(corners, params[:8].reshape(4, 2).astype(np.float32))
    homography = np.linalg.inv(to_target.astype(np.float64))
    _, _, radius = _centre_radius(frame)
    return Geometry(homography / homography[2, 2], frame, params[8:] / radius)


def remap(image: np.ndarray, coords: np.ndarray, interpolation: int = cv2.INTER_CUBIC) -> np.ndarray:
    """Sample ``image`` at ``coords`` (H, W, 2) target (x, y); outside: reflected."""
    return cv2.remap(
        image, coords[..., 0], coords[..., 1], interpolation, borderMode=cv2.BORDER_REFLECT
    ).reshape(coords.shape[:2] + image.shape[2:])


def _valid(coords: np.ndarray, size: tuple[int, int], margin: float) -> np.ndarray:
    height, width = size
    x, y = coords[..., 0], coords[..., 1]
    return (x >= margin) & (y >= margin) & (x <= width - 1 - margin) & (y <= height - 1 - margin)


def _gradient_at(image: np.ndarray, step: int) -> tuple[np.ndarray, np.ndarray]:
    """``np.gradient(image)`` (central differences, one-sided at the border) at every ``step``-th pixel
    only: (d/dy, d/dx), float64."""
    height, width = image.shape
    ys, xs = np.arange(0, height, step), np.arange(0, width, step)
    up, down = np.maximum(ys - 1, 0), np.minimum(ys + 1, height - 1)
    left, right = np.maximum(xs - 1, 0), np.minimum(xs + 1, width - 1)
    image = image.astype(np.float64)
    gy = (image[down][:, xs] - image[up][:, xs]) / (down - up)[:, None]
    gx = (image[ys][:, right] - image[ys][:, left]) / (right - left)[None, :]
    return gy, gx


def _seen(target: np.ndarray, coords: np.ndarray, render: Render | None, sigma: float) -> np.ndarray:
    """(H, W) float32: the target sampled at ``coords``, rendered and low-passed as the photo is compared."""
    model = remap(target.astype(np.float32), coords)
    if render is not None:
        model = render(model)
    return cv2.GaussianBlur(model.astype(np.float32), (0, 0), sigma)


def refine_geometry(
    target: np.ndarray,
    photo: np.ndarray,
    geometry: Geometry,
    *,
    sigma: float = 3.0,
    render: Render | None = None,
    distortion: bool = False,
    exclude: np.ndarray | None = None,
) -> tuple[Geometry, float]:
    """Gauss-Newton on the geometry: ``lowpass(photo) ≈ a · lowpass(render(warp(target))) + b``.

    Args:
        target: (h, w) one channel of the target (same tone scale as ``photo``, up to gain and offset).
        photo: (H, W) the same channel of the photograph.
        geometry: the starting geometry (within a few pixels).
        sigma: Gaussian low-pass applied to both sides (pixels); it makes the comparison blind to what
            the PSF model gets wrong and widens the basin of convergence.
        render: applied to the warped target before the low-pass (the current PSF estimate).
        distortion: also fit ``k1, k2, p1, p2``.
        exclude: (H, W) bool photo pixels to leave out (e.g. clipped).

    Returns:
        The refined geometry and the correlation of the compared images.
    """
    frame = photo.shape[:2]
    # The normal equations are subsampled (the low-passed images are smooth): every 2nd pixel, or coarser
    # on large frames so that about 250,000 pixels enter them (12 parameters).
    step = max(2, round(float(np.sqrt(frame[0] * frame[1] / 250_000))))
    params = _to_params(geometry)
    n_params = 12 if distortion else 8
    margin = int(np.ceil(3 * sigma)) + 2
    lp_photo = cv2.GaussianBlur(photo.astype(np.float32), (0, 0), sigma)[::step, ::step].astype(np.float64)
    keep_photo = np.zeros(frame, bool)
    keep_photo[margin:-margin, margin:-margin] = True
    if exclude is not None:
        keep_photo &= cv2.dilate(exclude.astype(np.uint8), np.ones((2 * margin + 1,) * 2, np.uint8)) == 0
    keep_photo = keep_photo[::step, ::step]
    correlation = 0.0
    for _ in range(15):
        coords = _from_params(params, frame).target_coords()
        lp_model = _seen(target, coords, render, sigma)
        gy, gx = _gradient_at(lp_model, step)
        lp_model = lp_model[::step, ::step].astype(np.float64)
        sub = coords[::step, ::step].astype(np.float64)
        keep = keep_photo & _valid(sub, target.shape[:2], margin)
        # d(target coords)/d(photo coords), to turn a change of target coordinates into a photo shift.
        jyy, jyx = np.gradient(sub[..., 1], step)
        jxy, jxx = np.gradient(sub[..., 0], step)
        det = jxx * jyy - jxy * jyx
        columns = []
        for j in range(n_params):
            delta = np.zeros_like(params)
            delta[j] = 0.5
            moved = _from_params(params + delta, frame).target_coords(step).astype(np.float64)
            dtx, dty = (moved[..., 0] - sub[..., 0]) / 0.5, (moved[..., 1] - sub[..., 1]) / 0.5
            vx = (jyy * dtx - jxy * dty) / det
            vy = (-jyx * dtx + jxx * dty) / det
            columns.append((gx * vx + gy * vy)[keep])
        m, p = lp_model[keep], lp_photo[keep]
        design = np.stack([m, np.ones_like(m)], axis=1)
        (gain, offset), *_ = np.linalg.lstsq(design, p, rcond=None)
        residual = p - gain * m - offset
        jac = np.stack([m, np.ones_like(m)] + [gain * c for c in columns], axis=1)
        normal = jac.T @ jac
        # Light Levenberg damping keeps the near-degenerate tangential/perspective pair in check.
        normal[2:, 2:] += 1e-6 * np.trace(normal[2:, 2:]) / n_params * np.eye(n_params)
        update = np.linalg.solve(normal, jac.T @ residual)
        params[:n_params] += update[2:]
        correlation = float(np.corrcoef(m, p)[0, 1])
        if np.abs(update[2:]).max() < 1e-3:
            break
    return _from_params(params, frame), correlation


def tile_shifts(
    target: np.ndarray,
    photo: np.ndarray,
    geometry: Geometry,
    grid: tuple[int, int],
    *,
    sigma: float = 3.0,
    render: Render | None = None,
) -> np.ndarray:
    """Residual shift (dx, dy) per tile that the geometry leaves: (rows, cols, 2), NaN where unmeasurable.

    One Gauss-Newton translation step per tile on the same low-passed comparison as ``refine_geometry``.
    """
    rows, cols = grid
    height, width = photo.shape[:2]
    coords = geometry.target_coords()
    lp_model = _seen(target, coords, render, sigma).astype(np.float64)
    lp_photo = cv2.GaussianBlur(photo.astype(np.float32), (0, 0), sigma).astype(np.float64)
    gy, gx = np.gradient(lp_model)
    margin = int(np.ceil(3 * sigma)) + 2
    valid = _valid(coords, target.shape[:2], margin)
    valid[:margin], valid[-margin:], valid[:, :margin], valid[:, -margin:] = False, False, False, False
    shifts = np.full((rows, cols, 2), np.nan)
    for r in range(rows):
        for c in range(cols):
            ys = slice(r * height // rows, (r + 1) * height // rows)
            xs = slice(c * width // cols, (c + 1) * width // cols)
            keep = valid[ys, xs]
            if keep.mean() < 0.5:
                continue
            m, p = lp_model[ys, xs][keep], lp_photo[ys, xs][keep]
            jac = np.stack([m, np.ones_like(m), gx[ys, xs][keep], gy[ys, xs][keep]], axis=1)
            normal = jac.T @ jac
            if np.linalg.cond(normal) > 1e10:
                continue
            solution = np.linalg.solve(normal, jac.T @ p)
            # photo(p) ≈ a·model(p) + a·∇model·d  →  the photo is the model displaced by -d.
            shifts[r, c] = -solution[2:] / solution[0]
    return shifts


def warp_to_photo(
    target: np.ndarray,
    geometry: Geometry,
    photo_size: tuple[int, int],
    model: TargetModel = "bicubic",
) -> tuple[np.ndarray, np.ndarray]:
    """The target on the photo grid: bicubic at the pixel centres, or (``model="area"``) the mean of the
    piecewise-constant target over each pixel's footprint, as a sensor sees a screen
    (``sensor.area_sample``).

    Returns:
        (H, W, C) warped target and (H, W) bool mask of pixels the target covers.
    """
    if tuple(geometry.frame) != tuple(photo_size):
        geometry = Geometry(geometry.homography, tuple(photo_size), geometry.distortion)
    coords = geometry.target_coords()
    warped = area_sample(target, coords, local_device()) if model == "area" else remap(target, coords)
    # Bicubic taps (and a footprint) reach 2 pixels: only pixels whose whole footprint is inside the
    # target are valid.
    mask = _valid(coords, target.shape[:2], 2.0)
    return warped.astype(np.float32), mask


def coarse_geometry(
    target: np.ndarray, photo: np.ndarray, layout: Layout | None = None, min_inliers: int = 30
) -> tuple[Geometry, int, str]:
    """Coarse target → photo geometry: the chart's markers when ``layout`` has them, else SIFT features.

    Returns:
        The geometry (a homography), the number of matched points and ``"markers"``/``"features"``.
    """
    if layout is not None and layout.markers:
        homography, inliers = markers_homography(photo, layout)
        method = "markers"
    else:
        homography, inliers = match_homography(target, photo, min_inliers)
        method = "features"
    check_homography(homography, target.shape[:2], photo.shape[:2])
    return Geometry(homography / homography[2, 2], photo.shape[:2]), inliers, method


def refine(
    target: np.ndarray,
    photo: np.ndarray,
    geometry: Geometry,
    *,
    sigma: float = 3.0,
    render: Render | None = None,
    distortion: Literal["auto", "none", "always"] = "auto",
    threshold_px: float = 0.05,
    grid: tuple[int, int] = (4, 6),
    exclude: np.ndarray | None = None,
) -> tuple[Geometry, float, float]:
    """Refine a coarse geometry: homography first, then distortion when its residual calls for it.

    A coarse start several pixels off (markers under lens distortion) is first pulled in at twice the
    low-pass, then refined at ``sigma``. With ``distortion="auto"`` the distortion terms are added when
    the RMS of the per-tile residual shifts exceeds ``threshold_px`` and kept if they reduce it.

    Returns:
        Geometry, correlation of the low-passed comparison, RMS tile residual (pixels).
    """
    kwargs = {"render": render, "exclude": exclude}
    geometry, _ = refine_geometry(target, photo, geometry, sigma=2 * sigma, distortion=False, **kwargs)
    geometry, correlation = refine_geometry(
        target, photo, geometry, sigma=sigma, distortion=distortion == "always", **kwargs
    )

    def rms(g: Geometry) -> float:
        shifts = tile_shifts(target, photo, g, grid, sigma=sigma, render=render)
        return float(np.sqrt(np.nanmean((shifts**2).sum(axis=-1))))

    residual = rms(geometry)
    if distortion == "auto" and residual > threshold_px:
        distorted, corr = refine_geometry(target, photo, geometry, sigma=sigma, distortion=True, **kwargs)
        distorted_residual = rms(distorted)
        if distorted_residual < residual:
            geometry, correlation, residual = distorted, corr, distorted_residual
    return geometry, correlation, residual
