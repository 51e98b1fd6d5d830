"""Registration: map a target onto its photograph's pixel grid (OpenCV).

SIFT matches + RANSAC homography, refined to sub-pixel by ECC, then an optional dense residual
correction (DIS optical flow on low-passed images) for distortion a homography cannot model.
A pair that cannot be registered raises ``RegistrationError`` with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


class RegistrationError(ValueError):
    """A pair that cannot be registered (too few inliers, degenerate homography, ECC failure)."""


@dataclass(frozen=True)
class Registration:
    """Where the target lands on the photograph.

    Attributes:
        homography: (3, 3) target pixel → photo pixel (OpenCV convention: pixel centres at integers).
        inliers: RANSAC inliers of the feature matches.
        ecc: final ECC correlation coefficient (1 is a perfect match up to gain and offset).
        flow: optional (H, W, 2) residual displacement (dx, dy) in photo pixels, applied after the homography.
    """

    homography: np.ndarray
    inliers: int
    ecc: float
    flow: np.ndarray | None = None


def to_gray(image: np.ndarray) -> np.ndarray:
    """(H, W, 3) float in [0, 1] → (H, W) float32 luminance."""
    return np.ascontiguousarray(image[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32))


def _to_u8(gray: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(gray, [0.5, 99.5])
    return np.clip((gray - lo) / max(hi - lo, 1e-6) * 255.0, 0, 255).astype(np.uint8)


def match_homography(target: np.ndarray, photo: np.ndarray, min_inliers: int = 30) -> tuple[np.ndarray, int]:
    """SIFT + ratio test + RANSAC: a rough target → photo homography and its inlier count."""
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
    check_homography(homography, target.shape[:2], photo.shape[:2])
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


def refine_ecc(
    target: np.ndarray, photo: np.ndarray, homography: np.ndarray, iterations: int = 200, smoothing: int = 5
) -> tuple[np.ndarray, float]:
    """Sub-pixel refinement by ECC (invariant to gain and offset); both images smoothed alike."""
    warp = np.linalg.inv(homography)
    warp = (warp / warp[2, 2]).astype(np.float32)
    criteria = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, iterations, 1e-7)
    try:
        ecc, warp = cv2.findTransformECC(
            to_gray(photo), to_gray(target), warp, cv2.MOTION_HOMOGRAPHY, criteria, None, smoothing
        )
    except cv2.error as error:
        raise RegistrationError(f"ECC refinement did not converge: {error.msg.strip()}") from error
    refined = np.linalg.inv(warp.astype(np.float64))
    return refined / refined[2, 2], float(ecc)


def dense_residual_flow(warped: np.ndarray, photo: np.ndarray, sigma: float = 2.0) -> np.ndarray:
    """DIS optical flow (photo → warped target) on low-passed images: (H, W, 2) displacement in pixels."""
    a = _to_u8(cv2.GaussianBlur(to_gray(photo), (0, 0), sigma))
    b = _to_u8(cv2.GaussianBlur(to_gray(warped), (0, 0), sigma))
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flow = dis.calc(a, b, None)
    return cv2.GaussianBlur(flow, (0, 0), 4 * sigma)


def register(
    target: np.ndarray, photo: np.ndarray, min_inliers: int = 30, dense_flow: bool = False
) -> Registration:
    """Register ``target`` (h, w, 3) to ``photo`` (H, W, 3), both float in [0, 1].

    Raises:
        RegistrationError: with the reason when the pair cannot be registered.
    """
    homography, inliers = match_homography(target, photo, min_inliers)
    homography, ecc = refine_ecc(target, photo, homography)
    check_homography(homography, target.shape[:2], photo.shape[:2])
    flow = None
    if dense_flow:
        warped, _ = warp_to_photo(target, Registration(homography, inliers, ecc), photo.shape[:2])
        flow = dense_residual_flow(warped, photo)
    return Registration(homography, inliers, ecc, flow)


def warp_to_photo(
    target: np.ndarray, registration: Registration, photo_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resample the target onto the photo grid (bicubic).

    Returns:
        (H, W, C) warped target and (H, W) bool mask of pixels the target covers.
    """
    height, width = photo_size
    warped = cv2.warpPerspective(target, registration.homography, (width, height), flags=cv2.INTER_CUBIC)
    ones = np.ones(target.shape[:2], dtype=np.float32)
    cover = cv2.warpPerspective(ones, registration.homography, (width, height), flags=cv2.INTER_LINEAR)
    if registration.flow is not None:
        gy, gx = np.mgrid[0:height, 0:width].astype(np.float32)
        map_x, map_y = gx + registration.flow[..., 0], gy + registration.flow[..., 1]
        warped = cv2.remap(warped, map_x, map_y, cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
        cover = cv2.remap(cover, map_x, map_y, cv2.INTER_LINEAR, borderValue=0)
    # Bicubic taps reach 2 pixels: only pixels whose whole footprint is inside the target are valid.
    mask = cv2.erode((cover > 0.999).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return warped.astype(np.float32), mask


def tile_registration_error(
    warped: np.ndarray, photo: np.ndarray, mask: np.ndarray, grid: tuple[int, int], sigma: float = 1.5
) -> np.ndarray:
    """Residual misregistration per FOV tile in pixels: phase correlation of low-passed tile crops.

    Returns:
        (rows, cols) float64; NaN for tiles with too little valid area.
    """
    rows, cols = grid
    height, width = mask.shape
    a = cv2.GaussianBlur(to_gray(photo), (0, 0), sigma).astype(np.float64)
    b = cv2.GaussianBlur(to_gray(warped), (0, 0), sigma).astype(np.float64)
    errors = np.full(grid, np.nan)
    for r in range(rows):
        for c in range(cols):
            ys = slice(r * height // rows, (r + 1) * height // rows)
            xs = slice(c * width // cols, (c + 1) * width // cols)
            if mask[ys, xs].mean() < 0.9 or min(ys.stop - ys.start, xs.stop - xs.start) < 16:
                continue
            window = cv2.createHanningWindow((xs.stop - xs.start, ys.stop - ys.start), cv2.CV_64F)
            (dx, dy), _ = cv2.phaseCorrelate(b[ys, xs], a[ys, xs], window)
            errors[r, c] = float(np.hypot(dx, dy))
    return errors
