"""Camera trajectory of the synthetic world: a smooth loop that translates and rotates."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ingest import conventions as cv


@dataclass
class CameraPathConfig:
    speed: float = 0.5  # metres per second along the loop
    radius_x: float = 1.6  # the loop stays inside the scene's keep-out disc
    radius_z: float = 1.1
    height_wobble: float = 0.05  # metres, vertical bob of a hand-held / head-mounted rig
    yaw_drift_deg_per_s: float = 12.0  # heading turns steadily, independent of the motion
    pitch_jitter_deg: float = 3.0
    roll_jitter_deg: float = 2.0
    # "drift": the heading turns on its own; "motion": the camera faces where it goes (a walk or a drive),
    # the case whose pure forward motion pinhole SfM rules reject.
    heading: str = "drift"


def camera_to_world(time: float, config: CameraPathConfig, seed: int = 0) -> np.ndarray:
    """4x4 camera-to-world pose at ``time`` seconds; deterministic for (config, seed)."""
    rng = np.random.default_rng(seed + 7919)
    phases = rng.uniform(0, 2 * math.pi, size=6)
    perimeter = 2 * math.pi * math.sqrt((config.radius_x**2 + config.radius_z**2) / 2)
    angle = phases[0] + 2 * math.pi * config.speed * time / perimeter
    position = np.array([
        config.radius_x * math.cos(angle),
        config.height_wobble * math.sin(2.3 * time + phases[1]),
        config.radius_z * math.sin(angle),
    ])
    if config.heading == "motion":
        yaw = math.atan2(-config.radius_x * math.sin(angle), config.radius_z * math.cos(angle))
    else:
        yaw = phases[2] + math.radians(config.yaw_drift_deg_per_s) * time
    # Sums of incommensurate sinusoids: smooth, non-periodic-looking jitter.
    pitch = math.radians(config.pitch_jitter_deg) * (0.6 * math.sin(0.9 * time + phases[3]) + 0.4 * math.sin(2.1 * time))
    roll = math.radians(config.roll_jitter_deg) * (0.7 * math.sin(1.3 * time + phases[4]) + 0.3 * math.sin(3.7 * time + phases[5]))
    R = cv.rotation_from_ypr(np.float64(yaw), np.float64(pitch), np.float64(roll))
    return cv.make_pose(R, position)
