"""Configuration of an NRC run, as dataclasses that round-trip through ``config.json``.

A run's config has two halves: the architecture (``model`` + ``sampler`` + the scenes' frames
of reference), which must match a checkpoint exactly, and the schedule (``train``), where
only ``steps`` may change between a run and its resumption.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields


@dataclass
class HashGridConfig:
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    finest_resolution: int = 2048  # over the contracted cube [-2, 2]^3 (the foreground is its inner half)
    interpolation: str = "Linear"

    def tcnn(self) -> dict:
        """tiny-cuda-nn style dict for ``nrc.hashgrid.HashGridEncoding``."""
        scale = math.exp((math.log(self.finest_resolution) - math.log(self.base_resolution)) / max(1, self.n_levels - 1))
        return {"otype": "HashGrid", "n_levels": self.n_levels, "n_features_per_level": self.n_features_per_level,
                "log2_hashmap_size": self.log2_hashmap_size, "base_resolution": self.base_resolution,
                "per_level_scale": scale, "interpolation": self.interpolation}


@dataclass
class ModelConfig:
    hashgrid: HashGridConfig = field(default_factory=HashGridConfig)
    feature_hidden: int = 64  # MLP from hash features to the per-point feature that picks a code
    n_codes: int = 16  # K: the codebook size (an upper bound: pruning and gates learn how many are used)
    code_dim: int = 16
    # Hash levels (coarsest first) the code is picked from; None: all. With fewer, the code cannot
    # change at texture frequency (it follows regions) and the variation reads every level instead.
    # Not the presets' default: on the 3-room family 3 levels gave FG-ARI 0.25 (0.11 with all levels)
    # at the same PSNR in one build and 0.11 (0.09) in the next, which differed only in float
    # rounding, and K=1 came within 1.3-1.8 dB of K=8 (bench/nrc_objects.py --quick, "3 code levels",
    # a row of that bench until objects mode).
    code_levels: int | None = None
    # The variation bottleneck (nrc.codebook): per-point numbers in [-1, 1] that reach the decoder
    # besides the code; 0 = none (the ablation). Density's is one number, scaled to e-folds.
    variation_dim: int = 1
    density_variation: float = 1.0
    # Density every surface code has at least (e-folds per scene radius; 0: none). Objects mode's
    # codes are stuff, not fog: see objects_mode.
    surface_density_floor: float = 0.0
    # What the colour variation does: "mlp", its numbers enter the colour MLP beside the code (one
    # number traces a curve through colour space, so one code can paint several hues); "brightness",
    # a code has one colour and its first number only scales it (x 2^[-2, 2]: shading), so a hue
    # needs its own code - what object discovery (nrc.assignment) rests on.
    colour_variation: str = "mlp"
    view_dependence: float = 0.3  # bound of the view-dependent colour logit (0: Lambertian)
    assign_temperature: float = 1.0  # softmax temperature of the straight-through assignment
    decoder_hidden: int = 64
    geo_dim: int = 15  # density-MLP features passed to the colour MLP
    color_hidden: int = 64

    def __post_init__(self):
        if self.colour_variation not in ("mlp", "brightness"):
            raise ValueError(f"model.colour_variation must be 'mlp' or 'brightness', got {self.colour_variation!r}")
        if self.surface_density_floor < 0:
            raise ValueError(f"model.surface_density_floor must be >= 0, got {self.surface_density_floor}")
        if self.code_levels is not None and not 1 <= self.code_levels <= self.hashgrid.n_levels:
            raise ValueError(f"model.code_levels must be in 1..{self.hashgrid.n_levels} (or null), got {self.code_levels}")


@dataclass
class SamplerConfig:
    n_samples: int = 128  # radiance-field samples per ray: uniform in the contraction's s-space, or drawn from the proposal
    # Proposal sampling (nrc.proposal): this many uniform samples of a small density-only field
    # per ray place the ``n_samples``; 0: none, the radiance field takes the uniform samples.
    proposal_samples: int = 0
    proposal_levels: int = 2  # its hash grid: levels from resolution 16 up to the finest (1 feature each)
    proposal_finest_resolution: int = 64
    proposal_log2_hashmap_size: int = 16
    proposal_hidden: int = 16
    near: float = 0.01  # in units of the scene radius
    far: float = 1000.0  # in units of the scene radius (s-space reaches 2 - 1/far)
    occupancy_resolution: int = 128  # cells per side over the contracted cube
    occupancy_alpha_threshold: float = 0.01  # a cell is skipped when its opacity over one step is below
    occupancy_update_every: int = 16
    occupancy_warmup: int = 256  # steps before the grid starts skipping anything
    occupancy_decay: float = 0.95
    # Whether training culls samples with the occupancy grid and refreshes it as it goes; None: only
    # without a proposal field, which already places the samples (on fern and the synthetic world
    # the grid culled 1% of them while its refresh passes cost ~16% of a cpu-preset step; the A/B
    # in bench/nrc.py --cpu-quick). The grid is built at the end of every fit, for rendering.
    occupancy_in_training: bool | None = None

    def __post_init__(self):
        if self.n_samples < 1 or self.proposal_samples < 0 or self.proposal_levels < 1:
            raise ValueError(f"sampler: n_samples must be >= 1, proposal_samples >= 0 and proposal_levels >= 1, got "
                             f"{self.n_samples}, {self.proposal_samples} and {self.proposal_levels}")
        if self.occupancy_in_training not in (None, True, False):
            raise ValueError(f"sampler: occupancy_in_training must be true, false or null, got {self.occupancy_in_training!r}")

    @property
    def culls_in_training(self) -> bool:
        """``occupancy_in_training`` resolved."""
        return self.proposal_samples == 0 if self.occupancy_in_training is None else self.occupancy_in_training

    @property
    def uniform_samples(self) -> int:
        """Samples per ray at uniform spacing (the proposal's when there is one): what the occupancy
        threshold and the mesh's iso level measure a step against."""
        return self.proposal_samples or self.n_samples


@dataclass
class TrainConfig:
    steps: int = 5000
    seconds: float | None = None  # wall-clock budget of a fit (None: until ``steps``); --seconds overrides
    batch_rays: int = 8192
    lr: float = 1e-2
    lr_final_fraction: float = 0.1  # exponential decay to lr * this at the last step
    gate_penalty: float = 1e-3  # per active-code weight: the price of a code that renders ...
    code_min_share: float = 0.005  # ... less than this share of the surface (more is free)
    variation_penalty: float = 1e-2  # price of the codebook's variation: mean v^2 (v in [-1, 1])
    # VQ commitment (features pull towards their code). Off: even 0.02 collapses every feature
    # onto one code (hash features constant, density constant: a skybox).
    commitment: float = 0.0
    # mip-NeRF 360 distortion loss: compact weights along rays. Without it 360-degree rooms fit as
    # a foggy skybox (tiny preset, 300 steps: depth abs-rel 1.8-3.0; 0.003: 0.40; 0.01: 0.85).
    distortion: float = 0.003
    proposal_loss: float = 1.0  # weight of the proposal field's interlevel loss (when it has one)
    codebook_loss: float = 1.0  # VQ codebook loss (codes pull towards their features)
    # Object discovery (nrc.assignment, needs model.colour_variation "brightness"; see objects_mode):
    # the E step's cross-entropy pulling surface features towards the code that best explains their
    # pixel, and the M step pulling each code's colour towards the pixels it explains.
    assignment_loss: float = 0.0
    code_colour_loss: float = 0.0
    code_restart_every: int = 100  # re-seed unused codes on surface features this often ...
    code_restart_until: float = 0.5  # ... during this fraction of training (then pruning decides)
    # After the restarts, the open code whose loss costs least is closed for good whenever the
    # photometric MSE rises by less than this fraction without it (0: never); nrc.code_upkeep.prune_codes.
    code_prune_tolerance: float = 0.02
    # The same in colour, for objects mode (needs model.colour_variation "brightness"): the open code
    # whose pixels another open code matches with a mean rise of their matching error below this
    # is closed (nrc.assignment.most_redundant_code; 0: never). Per pixel, so a small object's hue
    # keeps its code, which the photometric criterion closed first.
    code_prune_colour: float = 0.0
    save_every: int = 250
    log_every: int = 25
    preview_every: int = 1000  # held-out render PNG
    holdout_every: int = 8  # frames i with i % holdout_every == 0 are held out (never trained on)
    image_height: int | None = None  # synthetic worlds: render height; None = the video's size
    seed: int = 0
    mixed_precision: bool = True  # bf16 autocast on CUDA; ignored on CPU
    chunk_rays: int = 4096  # rays per chunk when rendering whole images


@dataclass
class SceneFrame:
    """Where a scene lives and its frame of reference (normalised = (x - center) / radius)."""

    source: str
    center: list[float]
    radius: float
    # Depth bounds along rays in world units when the capture states them (LLFF); None: the
    # sampler's defaults. Samples are uniform in distance up to ``linear_until`` radii from the
    # camera, then uniform in disparity: > 1 when the cameras look at the foreground from outside.
    near: float | None = None
    far: float | None = None
    linear_until: float = 1.0


@dataclass
class NRCConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scenes: list[SceneFrame] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NRCConfig":
        model = dict(d.get("model", {}))
        model["hashgrid"] = _build(HashGridConfig, model.get("hashgrid", {}))
        return cls(model=_build(ModelConfig, model), sampler=_build(SamplerConfig, d.get("sampler", {})),
                   train=_build(TrainConfig, d.get("train", {})),
                   scenes=[_build(SceneFrame, s) for s in d.get("scenes", [])])

    def check_scene(self, scene: int) -> None:
        """``--scene`` of render, export-mesh and the viewer: an index into the run's scenes."""
        if not 0 <= scene < len(self.scenes):
            from ingest.errors import OdinError

            raise OdinError(f"{scene} is out of range: the run has {len(self.scenes)} scene(s), 0-based", "--scene")

    def __post_init__(self):
        t = self.train
        if (t.assignment_loss or t.code_colour_loss or t.code_prune_colour) and self.model.colour_variation != "brightness":
            raise ValueError("train.assignment_loss, train.code_colour_loss and train.code_prune_colour need "
                             "model.colour_variation 'brightness' (a code's colour must be one colour for a pixel to pick it)")

    def architecture(self) -> dict:
        """What a checkpoint's tensors and meaning depend on (colour_variation and
        surface_density_floor only when not what every run had before they existed, so those
        runs still load)."""
        model = asdict(self.model)
        for key, before in (("colour_variation", "mlp"), ("surface_density_floor", 0.0)):
            if model[key] == before:
                del model[key]
        return {"model": model, "sampler": asdict(self.sampler),
                "scenes": [_scene_architecture(s) for s in self.scenes]}


def _scene_architecture(frame: SceneFrame) -> dict:
    """A scene frame without its unset optional keys, so runs saved before they existed still load."""
    unset = {"near": None, "far": None, "linear_until": 1.0}
    return {k: v for k, v in asdict(frame).items() if k not in unset or v != unset[k]}


def _build(cls, d: dict):
    known = {f.name for f in fields(cls)}
    unknown = set(d) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} key(s): {sorted(unknown)}")
    return cls(**d)


def preset(name: str) -> NRCConfig:
    """Named starting points, each with a default wall-clock budget (``train.seconds``). "gpu": the
    5-minute GPU config: the full-size field (16 levels, 2^19 entries, MLPs of 64), nerfacto's 4096
    rays a step, and a proposal field's 48 uniform samples placing 24 (was 8192 rays x 128 uniform
    samples: ~22 steps in its 300 s on 2 CPU cores; on fern at 378 px, 2 CPU cores: 64 placing 32
    made 675 steps in a fast spell of the shared machine and 493 in a slow one, and 48 placing 24
    made 705 in a slow one, held-out 22.10 dB; not yet measured on a GPU: bench/gpu_check.py);
    "cpu": 5 minutes on 2 cores: MLPs of 32, and a proposal field's 24 uniform samples place the
    radiance field's 16 (bench/nrc.py --sampler-ab: fern at 128 px 27.38 dB at 2.39x the rays/s of
    48 uniform samples, 26.12 dB; the synthetic world 31.06 vs 29.64 dB at 2.09x; the proposal
    untrained: 22.37 dB on fern); batches of 4096 rays: a step's fixed costs (Adam over the whole
    hash table, its gradient, hundreds of operator calls) are shared by more rays (per ray, 2048
    took ~18% less time than 1024 and 4096 ~11% less than 2048), and fern's held-out PSNR is no
    worse for it: 4000 steps of 1024 rays 27.05 dB, 2400 of 2048 27.07 dB, 1200 of 4096 27.38 dB;
    1200 steps: about what 2 loaded cores run in its 300 s, so the learning rate has decayed when
    the budget ends; "tiny": 2 minutes, for tests and demos."""
    if name == "gpu":
        return NRCConfig(sampler=SamplerConfig(n_samples=24, proposal_samples=48),
                         train=TrainConfig(seconds=300.0, batch_rays=4096))
    if name == "cpu":
        return NRCConfig(
            model=ModelConfig(hashgrid=HashGridConfig(n_levels=12, log2_hashmap_size=17, finest_resolution=1024),
                              feature_hidden=32, decoder_hidden=32, color_hidden=32),
            sampler=SamplerConfig(n_samples=16, proposal_samples=24, occupancy_resolution=48, occupancy_warmup=32),
            train=TrainConfig(steps=1200, seconds=300.0, batch_rays=4096, image_height=128, save_every=100,
                              preview_every=500))
    if name == "tiny":
        return NRCConfig(
            model=ModelConfig(hashgrid=HashGridConfig(n_levels=8, log2_hashmap_size=14, base_resolution=8,
                                                      finest_resolution=256),
                              feature_hidden=32, n_codes=8, code_dim=8, decoder_hidden=32, geo_dim=7, color_hidden=32),
            sampler=SamplerConfig(n_samples=48, occupancy_resolution=32, occupancy_update_every=8, occupancy_warmup=32),
            train=TrainConfig(steps=600, seconds=120.0, batch_rays=512, image_height=32, save_every=100, log_every=10,
                              code_restart_every=20, lr_final_fraction=0.5,
                              preview_every=600, chunk_rays=2048))
    raise ValueError(f"unknown preset {name!r} (gpu, cpu, tiny)")


PRESETS = ("gpu", "cpu", "tiny")


def objects_mode(config: NRCConfig) -> NRCConfig:
    """``config`` set up to discover objects (``odin nrc fit --objects``; nrc.assignment): one
    colour per code, shaded; the E and M steps; codes pruned in colour, not by photometric cost (it
    closed the codes of small objects first: FG-ARI 0.15 with it, 0.67 without, one seed of the
    prototype on the coloured 3-room family); a density floor under the surface codes. Not the
    default: on that family (bench/nrc_objects.py --quick --coloured) it costs 1.6 dB of held-out
    PSNR (K=8 28.75 dB, "photometric" 30.31) for FG-ARI 0.74 against 0.27; on the textured family
    it gains 0.3 dB (30.17 vs 29.86) and FG-ARI 0.37 against 0.12; on fern it costs 4.3 dB (README)."""
    config.model.colour_variation = "brightness"
    config.train.assignment_loss, config.train.code_colour_loss = 3e-2, 0.3
    config.train.code_prune_tolerance = 0.0
    # The number of codes learned in colour instead: two codes of one hue are one too many. On the
    # families of bench/nrc_objects.py --quick (M = 4 types) its K=16 row keeps 7 codes open on the
    # textured one and 6 on the coloured one (15, and 11 at seed 1, without it), K=8 6 and 5 (7 and
    # 7) at FG-ARI 0.37 and 0.74 (0.39 and 0.77); a tolerance of 1e-3 closed a coloured type's code
    # at K=8 (3 open at seeds 0 and 1). bench/nrc_objects.md.
    config.train.code_prune_colour = 3e-4
    # Codes are stuff: without a floor every code of the textured family ended at 0.2-0.7 e-folds
    # per radius, a fog that both walls and free space could take (depth error 0.83, the objects'
    # pixels 1.1 dB worse than with K=1). Seeds 0-2, bench/nrc_objects.py --quick (textured) and
    # --coloured, FG-ARI: floor 0 0.35/0.21/0.18 and 0.77/0.83/0.82; 1.5 0.39/0.54/0.33 (+1.4 dB,
    # depth error 0.37-0.56 against 0.45-0.95) and 0.77/0.51/0.78; 3 0.39/0.20/0.32 and
    # 0.73/0.85/0.48; 5 (seed 0, seed 2) 0.28 and 0.78; 10 (textured seed 0) 0.27 at 26.45 dB.
    config.model.surface_density_floor = 1.5
    return config
