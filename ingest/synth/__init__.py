"""Synthetic 360° world with exact ground truth (poses, depth, object ids, meshes)."""
from ingest.synth.camera_path import CameraPathConfig, camera_to_world
from ingest.synth.render import Hits, Render, cast_rays, render_equirect, render_perspective, range_to_z_depth
from ingest.synth.scene import Primitive, Scene, make_scene
from ingest.synth.family import family_room, object_types
from ingest.synth.world import SynthConfig, SyntheticWorld, generate, generate_family, object_mesh, room_mesh

__all__ = ["CameraPathConfig", "camera_to_world", "Hits", "Render", "cast_rays", "render_equirect",
           "render_perspective", "range_to_z_depth", "Primitive", "Scene", "make_scene", "SynthConfig",
           "SyntheticWorld", "generate", "generate_family", "object_mesh", "room_mesh", "family_room",
           "object_types"]
