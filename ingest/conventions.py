"""Camera and pose conventions of Odin360 — the one place they are defined.

Every package imports geometry from here; nothing else defines axes or pixel maps.

Axes (world and camera)
    Right-handed, OpenCV/COLMAP style: x right, y DOWN, z forward.
    A camera with identity rotation looks along world +z, its image "up" is world -y.
    The world's gravity points along +y, so "up" is -y. (The synthetic world uses this too.)

Poses
    A pose is a 4x4 (or 3x4) camera-to-world matrix ``c2w = [R | t]``: it maps a point in
    camera coordinates to world coordinates, ``X_w = R @ X_c + t``; ``t`` is the camera centre.
    ``w2c = inv(c2w)`` is COLMAP's ``cam_from_world``.
    A relative pose "of j with respect to i" is ``T_j_from_i = inv(c2w_j) @ c2w_i``: it maps
    points in camera i's frame into camera j's frame (``X_j = R X_i + t``). Pairs store the
    relative pose of the target camera with respect to the source camera in this form.

Rotations
    Matrices act on column vectors. Quaternions are (w, x, y, z), unit, w >= 0 returned.
    Axis-angle is a 3-vector (axis * angle, radians). The 6D form (Zhou et al.) is the first
    two columns of R, concatenated (used for network conditioning).
    Yaw/pitch/roll (radians): ``R = Ry(yaw) @ Rx(pitch) @ Rz(roll)``. Positive yaw turns the
    view to the right (+x), positive pitch looks up (towards -y), positive roll is about +z.

Equirectangular images (W = 2H)
    A camera-frame unit ray d = (x, y, z) has longitude ``lon = atan2(x, z)`` in [-pi, pi)
    (0 = forward, +pi/2 = right) and latitude ``lat = asin(-y)`` in [-pi/2, pi/2] (+ = up).
    Continuous pixel coordinates put pixel (col, row)'s centre at (col + 0.5, row + 0.5):
    ``u = (lon / 2pi + 0.5) W``, ``v = (0.5 - lat / pi) H``; the image centre looks forward,
    the top row looks up, and u grows with longitude (to the right).

Perspective cameras
    Pinhole ``u = fx x/z + cx``, ``v = fy y/z + cy`` with the same pixel-centre convention,
    so a centred camera has ``cx = W/2, cy = H/2``.

nerfstudio / instant-ngp / OpenGL
    Their camera axes are x right, y UP, z backward. ``c2w_gl = c2w_cv @ diag(1, -1, -1, 1)``
    (the flip is its own inverse). World axes are left as they are.

All functions accept numpy arrays or torch tensors (batched over leading dims) and return
the same kind.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

try:  # torch is a hard dependency of the project, but the conventions never require it.
    import torch
except ImportError:  # pragma: no cover
    torch = None

OPENGL_FROM_OPENCV = np.diag([1.0, -1.0, -1.0, 1.0])


# --------------------------------------------------------------------------- array helpers
def _is_torch(x) -> bool:
    return torch is not None and isinstance(x, torch.Tensor)


def _stack(xs, axis=-1):
    return torch.stack(xs, dim=axis) if _is_torch(xs[0]) else np.stack(xs, axis=axis)


def _atan2(y, x):
    return torch.atan2(y, x) if _is_torch(y) else np.arctan2(y, x)


def _asin(x):
    return torch.asin(x.clamp(-1, 1)) if _is_torch(x) else np.arcsin(np.clip(x, -1, 1))


def _sqrt(x):
    return torch.sqrt(x) if _is_torch(x) else np.sqrt(x)


def _sin(x):
    return torch.sin(x) if _is_torch(x) else np.sin(x)


def _cos(x):
    return torch.cos(x) if _is_torch(x) else np.cos(x)


def _norm(x, keepdim=True):
    if _is_torch(x):
        return torch.linalg.norm(x, dim=-1, keepdim=keepdim)
    return np.linalg.norm(x, axis=-1, keepdims=keepdim)


def _asarray(x, like):
    if _is_torch(like):
        return torch.as_tensor(x, dtype=like.dtype, device=like.device)
    return np.asarray(x, dtype=like.dtype if np.issubdtype(like.dtype, np.floating) else np.float64)


def _float(x):
    if _is_torch(x):
        return x if x.is_floating_point() else x.double()
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(np.float64)


def normalize(v, eps: float = 1e-12):
    """Unit vectors along the last axis."""
    n = _norm(v)
    return v / (n.clamp_min(eps) if _is_torch(n) else np.maximum(n, eps))


# --------------------------------------------------------------------------- rotations
def _rot_x(a):
    c, s, o, z = _cos(a), _sin(a), a * 0 + 1, a * 0
    return _stack([_stack([o, z, z]), _stack([z, c, -s]), _stack([z, s, c])], axis=-2)


def _rot_y(a):
    c, s, o, z = _cos(a), _sin(a), a * 0 + 1, a * 0
    return _stack([_stack([c, z, s]), _stack([z, o, z]), _stack([-s, z, c])], axis=-2)


def _rot_z(a):
    c, s, o, z = _cos(a), _sin(a), a * 0 + 1, a * 0
    return _stack([_stack([c, -s, z]), _stack([s, c, z]), _stack([z, z, o])], axis=-2)


def rotation_from_ypr(yaw, pitch, roll):
    """Camera-to-world rotation ``Ry(yaw) @ Rx(pitch) @ Rz(roll)`` (radians)."""
    yaw, pitch, roll = (_float(a) for a in (yaw, pitch, roll))
    return _rot_y(yaw) @ _rot_x(pitch) @ _rot_z(roll)


def ypr_from_rotation(R):
    """Inverse of :func:`rotation_from_ypr`; pitch in [-pi/2, pi/2]."""
    R = _float(R)
    # With R = Ry Rx Rz: R[1,2] = -sin(pitch); R[0,2] = sin(yaw)cos(pitch); R[2,2] = cos(yaw)cos(pitch)
    pitch = _asin(-R[..., 1, 2])
    yaw = _atan2(R[..., 0, 2], R[..., 2, 2])
    roll = _atan2(R[..., 1, 0], R[..., 1, 1])
    return yaw, pitch, roll


def rotation_from_quaternion(q):
    """(w, x, y, z) quaternion (normalised here) -> 3x3 rotation matrix."""
    q = normalize(_float(q))
    w, x, y, z = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    rows = [
        _stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)]),
        _stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)]),
        _stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]),
    ]
    return _stack(rows, axis=-2)


def quaternion_from_rotation(R):
    """3x3 rotation -> unit (w, x, y, z) with w >= 0 (numerically stable branch choice)."""
    R = _float(R)
    m00, m11, m22 = R[..., 0, 0], R[..., 1, 1], R[..., 2, 2]
    # Four candidate solutions; take the one with the largest denominator per element.
    cands = _stack([
        _stack([1 + m00 + m11 + m22, R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]]),
        _stack([R[..., 2, 1] - R[..., 1, 2], 1 + m00 - m11 - m22, R[..., 1, 0] + R[..., 0, 1], R[..., 0, 2] + R[..., 2, 0]]),
        _stack([R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] + R[..., 0, 1], 1 - m00 + m11 - m22, R[..., 2, 1] + R[..., 1, 2]]),
        _stack([R[..., 1, 0] - R[..., 0, 1], R[..., 0, 2] + R[..., 2, 0], R[..., 2, 1] + R[..., 1, 2], 1 - m00 - m11 + m22]),
    ], axis=-2)
    diag = _stack([1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22])
    if _is_torch(R):
        idx = diag.argmax(dim=-1)
        q = torch.take_along_dim(cands, idx[..., None, None].expand(*idx.shape, 1, 4), dim=-2)[..., 0, :]
        q = normalize(q)
        return torch.where(q[..., :1] < 0, -q, q)
    idx = np.argmax(diag, axis=-1)
    q = np.take_along_axis(cands, idx[..., None, None].repeat(4, axis=-1), axis=-2)[..., 0, :]
    q = normalize(q)
    return np.where(q[..., :1] < 0, -q, q)


def rotation_from_axis_angle(v):
    """Rodrigues: axis-angle 3-vector (radians) -> 3x3 rotation."""
    v = _float(v)
    angle = _norm(v, keepdim=False)
    half = angle / 2
    s = _sin(half)
    # sin(a/2)/a -> 1/2 as a -> 0; written so both backends stay finite and differentiable.
    small = angle < 1e-8
    if _is_torch(v):
        scale = torch.where(small, 0.5 - angle**2 / 48, s / torch.where(small, torch.ones_like(angle), angle))
    else:
        scale = np.where(small, 0.5 - angle**2 / 48, s / np.where(small, 1.0, angle))
    q = _stack([_cos(half), v[..., 0] * scale, v[..., 1] * scale, v[..., 2] * scale])
    return rotation_from_quaternion(q)


def axis_angle_from_rotation(R):
    """3x3 rotation -> axis-angle 3-vector (radians, angle in [0, pi])."""
    q = quaternion_from_rotation(R)
    w, xyz = q[..., 0], q[..., 1:]
    sin_half = _norm(xyz, keepdim=False)
    angle = 2 * _atan2(sin_half, w)
    if _is_torch(q):
        scale = torch.where(sin_half < 1e-8, 2.0 / w.clamp_min(1e-12), angle / sin_half.clamp_min(1e-12))
    else:
        scale = np.where(sin_half < 1e-8, 2.0 / np.maximum(w, 1e-12), angle / np.maximum(sin_half, 1e-12))
    return xyz * scale[..., None]


def rotation_6d_from_rotation(R):
    """First two columns of R, as (..., 6): [R[:,0], R[:,1]]."""
    R = _float(R)
    cols = [R[..., :, 0], R[..., :, 1]]
    return torch.cat(cols, dim=-1) if _is_torch(R) else np.concatenate(cols, axis=-1)


def rotation_from_6d(r6):
    """Gram-Schmidt on the two 3-vectors of a 6D rotation."""
    r6 = _float(r6)
    a = normalize(r6[..., :3])
    b = r6[..., 3:]
    dot = (a * b).sum(-1, keepdims=True) if not _is_torch(a) else (a * b).sum(-1, keepdim=True)
    b = normalize(b - dot * a)
    c = torch.linalg.cross(a, b) if _is_torch(a) else np.cross(a, b)
    return _stack([a, b, c], axis=-1)


def rotation_angle_deg(R_a, R_b):
    """Geodesic angle between two rotations, degrees."""
    R = _float(R_a) @ _swap(_float(R_b))
    trace = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    cos = (trace - 1) / 2
    if _is_torch(cos):
        return torch.rad2deg(torch.acos(cos.clamp(-1, 1)))
    return np.degrees(np.arccos(np.clip(cos, -1, 1)))


def is_rotation(R, atol: float = 1e-4) -> bool:
    """True if every matrix is orthonormal with determinant +1 (and finite)."""
    R = np.asarray(R.detach().cpu() if _is_torch(R) else R, dtype=np.float64)
    if R.shape[-2:] != (3, 3) or not np.all(np.isfinite(R)):
        return False
    eye = np.eye(3)
    ortho = np.allclose(R @ np.swapaxes(R, -1, -2), eye, atol=atol)
    return bool(ortho and np.allclose(np.linalg.det(R), 1.0, atol=atol))


def project_to_rotation(M):
    """Nearest rotation (SVD) to a 3x3 matrix — to clean up accumulated drift."""
    if _is_torch(M):
        U, _, Vh = torch.linalg.svd(M)
        d = torch.sign(torch.linalg.det(U @ Vh))
        U = torch.cat([U[..., :2], U[..., 2:] * d[..., None, None]], dim=-1)
        return U @ Vh
    U, _, Vh = np.linalg.svd(M)
    d = np.sign(np.linalg.det(U @ Vh))
    U = np.concatenate([U[..., :2], U[..., 2:] * d[..., None, None]], axis=-1)
    return U @ Vh


# --------------------------------------------------------------------------- poses
def make_pose(R, t):
    """4x4 from a 3x3 rotation and a 3-vector (batched)."""
    R, t = _float(R), _float(t)
    if _is_torch(R):
        T = torch.zeros(*R.shape[:-2], 4, 4, dtype=R.dtype, device=R.device)
    else:
        T = np.zeros(R.shape[:-2] + (4, 4), dtype=R.dtype)
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1
    return T


def as_4x4(T):
    """Accept 3x4 or 4x4 poses, return 4x4."""
    T = _float(T)
    if T.shape[-2:] == (4, 4):
        return T
    return make_pose(T[..., :3, :3], T[..., :3, 3])


def invert_pose(T):
    """Inverse of a rigid 4x4 (or 3x4) transform, exactly (no general inverse)."""
    T = as_4x4(T)
    R, t = T[..., :3, :3], T[..., :3, 3]
    Rt = _swap(R)
    return make_pose(Rt, -(Rt @ t[..., None])[..., 0])


def relative_pose(c2w_src, c2w_tgt):
    """``T_tgt_from_src = inv(c2w_tgt) @ c2w_src``: maps source-camera points into the target camera."""
    return invert_pose(c2w_tgt) @ as_4x4(c2w_src)


def _swap(M):
    return M.transpose(-1, -2) if _is_torch(M) else np.swapaxes(M, -1, -2)


def transform_points(T, points):
    """Apply a 4x4/3x4 transform to points (..., N, 3); T is (4, 4) or batched (..., 4, 4)."""
    T = _float(T)
    R, t = T[..., :3, :3], T[..., :3, 3]
    return points @ _swap(R) + t[..., None, :] if T.ndim > 2 else points @ _swap(R) + t


def opengl_from_opencv_c2w(c2w):
    """OpenCV-axes camera-to-world -> nerfstudio/OpenGL-axes camera-to-world (self-inverse)."""
    T = as_4x4(c2w)
    return T @ _asarray(OPENGL_FROM_OPENCV, T)


opencv_from_opengl_c2w = opengl_from_opencv_c2w


# --------------------------------------------------------------------------- equirectangular
def direction_from_lonlat(lon, lat):
    """Unit camera-frame ray from longitude/latitude (radians)."""
    lon, lat = _float(lon), _float(lat)
    cl = _cos(lat)
    return _stack([cl * _sin(lon), -_sin(lat), cl * _cos(lon)])


def lonlat_from_direction(d):
    """(lon, lat) in radians of camera-frame directions (need not be unit)."""
    d = _float(d)
    # atan2 rather than asin(-y): asin loses precision near the poles.
    return _atan2(d[..., 0], d[..., 2]), _atan2(-d[..., 1], _sqrt(d[..., 0] ** 2 + d[..., 2] ** 2))


def lonlat_from_equirect_pixel(u, v, width: int, height: int):
    """Continuous pixel coords (centre of pixel (c, r) is (c+0.5, r+0.5)) -> (lon, lat)."""
    u, v = _float(u), _float(v)
    return (u / width - 0.5) * (2 * math.pi), (0.5 - v / height) * math.pi


def equirect_pixel_from_lonlat(lon, lat, width: int, height: int):
    """(lon, lat) -> continuous pixel coords; u is wrapped into [0, W)."""
    u = (lon / (2 * math.pi) + 0.5) * width
    u = u % width
    v = (0.5 - lat / math.pi) * height
    return u, v


def equirect_pixel_from_direction(d, width: int, height: int):
    lon, lat = lonlat_from_direction(d)
    return equirect_pixel_from_lonlat(lon, lat, width, height)


def equirect_directions(height: int, width: int, like=None):
    """(H, W, 3) unit camera-frame rays through every pixel centre of an equirectangular image.

    ``like``: a torch tensor to match dtype/device, else float64 numpy.
    """
    if like is not None and _is_torch(like):
        v, u = torch.meshgrid(torch.arange(height, dtype=like.dtype, device=like.device) + 0.5,
                              torch.arange(width, dtype=like.dtype, device=like.device) + 0.5, indexing="ij")
    else:
        v, u = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    return direction_from_lonlat(*lonlat_from_equirect_pixel(u, v, width, height))


# --------------------------------------------------------------------------- perspective
@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels (pixel-centre convention above)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @classmethod
    def from_fov(cls, width: int, height: int, fov_x_deg: float, fov_y_deg: float | None = None) -> "Intrinsics":
        """Centred camera with horizontal FoV (and square pixels unless fov_y is given)."""
        fx = (width / 2) / math.tan(math.radians(fov_x_deg) / 2)
        fy = fx if fov_y_deg is None else (height / 2) / math.tan(math.radians(fov_y_deg) / 2)
        return cls(fx, fy, width / 2, height / 2, int(width), int(height))

    @property
    def fov_x_deg(self) -> float:
        return math.degrees(2 * math.atan(self.width / (2 * self.fx)))

    @property
    def fov_y_deg(self) -> float:
        return math.degrees(2 * math.atan(self.height / (2 * self.fy)))

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0, self.cx], [0, self.fy, self.cy], [0, 0, 1.0]])

    def scaled(self, sx: float, sy: float | None = None) -> "Intrinsics":
        sy = sx if sy is None else sy
        return Intrinsics(self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy,
                          int(round(self.width * sx)), int(round(self.height * sy)))

    def to_dict(self) -> dict:
        return asdict(self)


def perspective_directions(K: Intrinsics, like=None):
    """(H, W, 3) camera-frame rays (z = 1, not unit) through every pixel centre."""
    if like is not None and _is_torch(like):
        v, u = torch.meshgrid(torch.arange(K.height, dtype=like.dtype, device=like.device) + 0.5,
                              torch.arange(K.width, dtype=like.dtype, device=like.device) + 0.5, indexing="ij")
    else:
        v, u = np.meshgrid(np.arange(K.height) + 0.5, np.arange(K.width) + 0.5, indexing="ij")
    return _stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, u * 0 + 1])


def project_perspective(points_cam, K: Intrinsics):
    """Camera-frame points (..., 3) -> (u, v, z). Points behind the camera get z <= 0."""
    x, y, z = points_cam[..., 0], points_cam[..., 1], points_cam[..., 2]
    if _is_torch(z):
        safe = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    else:
        safe = np.where(np.abs(z) < 1e-12, 1e-12, z)
    return K.fx * x / safe + K.cx, K.fy * y / safe + K.cy, z


# --------------------------------------------------------------------------- rays
def rays_world(c2w, directions_cam):
    """World-frame ray origins and unit directions for camera-frame directions (..., 3).

    ``c2w`` is one 4x4/3x4 pose; returns (origins, directions), both shaped like ``directions_cam``.
    """
    T = as_4x4(c2w)
    R, t = T[..., :3, :3], T[..., :3, 3]
    d = normalize(directions_cam @ _swap(R))
    o = t.expand_as(d) if _is_torch(d) else np.broadcast_to(t, d.shape).copy()
    return o, d


def plucker_rays(origins, directions):
    """Plücker coordinates (d, o x d) per ray, (..., 6), with d unit."""
    d = normalize(directions)
    m = torch.linalg.cross(origins, d) if _is_torch(d) else np.cross(origins, d)
    return torch.cat([d, m], dim=-1) if _is_torch(d) else np.concatenate([d, m], axis=-1)
