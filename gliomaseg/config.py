"""The one configuration of an experiment, saved beside every checkpoint.

A prediction needs nothing but the run folder: the preprocessing that produced
the training data and the network that learned from it are both recorded here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from gliomaseg import __version__
from gliomaseg.io.atomic import write_text_atomic
from gliomaseg.labels import MODALITIES

EXTRA_CHANNELS = ("t1c-t1n",)
"""Input channels computed from the normalised sequences (``PreprocessConfig.extra_channels``): the
T1c - T1n subtraction shows where contrast enhances (BraTS 2024's second place fed it to its networks)."""


@dataclass(frozen=True)
class PreprocessConfig:
    """The baseline recipe's preprocessing."""

    size: tuple[int, int, int] = (160, 160, 160)  # network grid; the recipe's mean brain box is 136x175x142
    margin: int = 2  # voxels added around the brain box
    threshold: float = 0.0  # brain = largest blob above this intensity
    percentiles: tuple[float, float] = (1.0, 99.0)  # per-modality clipping inside the brain
    label_scheme: str = "brats2024"  # how the training label files are written (labels.LABEL_SCHEMES)
    extra_channels: tuple[str, ...] = ()  # EXTRA_CHANNELS appended after the four sequences
    # keep the brain box on the input's own grid (1 mm in BraTS) instead of resizing it to ``size``: a two-stage
    # model's second stage, trained on cubes of TrainConfig.patch_size and predicting by sliding window
    native: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.extra_channels) - set(EXTRA_CHANNELS)
        if unknown:
            raise ValueError(f"unknown extra channel(s) {', '.join(sorted(unknown))} (known: {', '.join(EXTRA_CHANNELS)})")

    @property
    def channels(self) -> int:
        """The network's input channels: the four sequences, then the extra ones."""
        return len(MODALITIES) + len(self.extra_channels)


# The values each setting takes, declared with the settings so the command line can show them without importing
# torch; the registries that implement them (networks, targets, protocols) are tested to cover exactly these.
AUGMENTATIONS = ("none", "basic", "multisite")
"""``TrainConfig.augment`` values (gliomaseg.training.dataset builds them)."""
NETWORK_NAMES = ("vnet3d", "vnet3d-lean", "monai-vnet", "segresnet", "dynunet")
"""``TrainConfig.model`` values (gliomaseg.model.networks.NETWORKS)."""
TARGET_NAMES = ("labels", "regions")
"""``TrainConfig.targets`` values (gliomaseg.model.targets.TARGETS)."""
OPTIMIZERS = ("adamw", "sgd")
FUSIONS = ("replace", "mean", "cavity")
"""``TrainConfig.fusion`` values (gliomaseg.inference.two_stage)."""
STAGE_TWO_PATCH = 64
"""A second stage's cube side unless --patch-size says otherwise: 64 mm at 1 mm, the cost of a cpu-preset step."""
PROTOCOL_NAMES = ("brats2024", "brats2026")
"""``TrainConfig.protocol`` and ``--protocol`` values (gliomaseg.evaluation.protocol.PROTOCOLS)."""


@dataclass(frozen=True)
class TrainConfig:
    """Network and optimisation; defaults are the baseline recipe."""

    model: str = "vnet3d"  # the recipe's VNet3d; or vnet3d-lean (8 channels at full resolution), monai-vnet, segresnet, dynunet
    targets: str = "labels"  # softmax over the labels 0-4, or "regions": sigmoid WT, TC, ET, RC
    # > 0 (label targets): the loss adds this weight times a Dice over TC and WT summed from the label probabilities,
    # so a core voxel called oedema costs the core's Dice as the challenge scores it (gliomaseg.training.loss)
    region_dice: float = 0.0
    dropout: float = 0.0  # every dropout layer's probability (VNet3d: Dropout3d on its skip connections)
    epochs: int = 300
    batch_size: int = 4  # per process under torchrun
    optimizer: str = "adamw"  # or "sgd" (momentum 0.99, Nesterov, as nnU-Net)
    lr: float = 1e-3  # peak; cosine annealing to 0 over the epochs
    weight_decay: float = 1e-2
    repeats: int = 5  # times each training case is seen per epoch, each with its own augmentation
    # > 0: an epoch is this many batches, whatever the number of cases (a run's cost no longer grows with the data)
    steps_per_epoch: int = 0
    patch_size: int = 0  # > 0: train on random cubes of this side, predict by sliding window
    # the share of those cubes centred on a tumour voxel (nnU-Net's foreground oversampling); the rest anywhere else
    tumour_cubes: float = 0.5
    # "basic" (the recipe's: all sequences scaled together), "multisite" (each on its own, thick-slice and
    # blur imitation; the cpu preset's) or "none"; runs saved before the choice stored true/false (basic/none)
    augment: str = "basic"
    modality_dropout: float = 0.0  # each sample loses each sequence with this probability (never all): predicts without some
    transplant: float = 0.0  # each sample gets another training case's tumour pasted into its brain with this probability
    val_fraction: float = 0.2  # used when folds < 2
    folds: int = 0  # >= 2: k-fold cross-validation by patient, training fold ``fold``
    fold: int = 0
    val_every: int = 10
    seed: int = 0
    deterministic: bool = False  # deterministic kernels (slower on GPUs); runs are reproducible on a CPU without it
    amp: bool = True  # mixed precision on CUDA (and for inference on CPUs with native bf16)
    # also train in bf16 on CPUs with native bf16 (AVX512-BF16, AMX): steps ~2x faster there, but oneDNN's bf16
    # kernels are not bit-reproducible, so a resumed or repeated run only agrees statistically (the cpu preset's choice)
    cpu_bf16: bool = False
    sync_batchnorm: bool = True  # under torchrun on GPUs: BatchNorm statistics over all processes
    compile: bool = False  # torch.compile the network (CUDA; first steps are slow while it compiles)
    num_workers: int = 2
    tune_postprocess: bool = True  # after the last epoch, tune post-processing rules on the validation cases
    init_from: str = ""  # start from these weights (packaged model name, run folder or checkpoint) with a fresh schedule
    # what validation (metrics.csv val_dice_*, best.pt) and tuning score: brats2024 lesion-wise Dice, or brats2026 pq_dsc
    protocol: str = "brats2024"
    # a two-stage model's first stage (the name of the run folder or packaged model given to --stage-one, never its
    # path; a copy is kept in the run's stage_one/): it finds the tumour on its grid, this run segments the box around
    # it on the native grid
    stage_one: str = ""
    # a two-stage model: near stage one's tumour, the second stage's probabilities "replace" the first's, or the two
    # are averaged ("mean"), so that neither stage alone can erase a tumour the other finds; "cavity" averages them too,
    # but lets the second stage's resection cavity stand in its window wherever the first saw no tumour
    # (gliomaseg.inference.two_stage)
    fusion: str = "replace"
    # a two-stage model's second stage also reads the first stage's probabilities of every target, as nnU-Net's cascade
    # reads its low-resolution segmentation: it refines what the first stage found instead of deciding it from one cube
    cascade: bool = False

    def __post_init__(self) -> None:
        # checked when a config is made or loaded, so a bad value in a run's or a package's config stops the
        # command that reads it, not a prediction halfway through a batch
        for name, allowed in (("model", NETWORK_NAMES), ("targets", TARGET_NAMES), ("augment", AUGMENTATIONS),
                              ("optimizer", OPTIMIZERS), ("fusion", FUSIONS), ("protocol", PROTOCOL_NAMES)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} '{getattr(self, name)}' ({', '.join(allowed)})")
        if self.region_dice and self.targets == "regions":
            raise ValueError("--region-dice needs label targets: region targets score TC and WT already")


PRESETS: dict[str, dict[str, Any]] = {
    "recipe": {},
    # A fixed 40 x 32 steps, so the run's cost does not grow with the cases. A step took ~1 s on 2 AVX-512 Xeon cores
    # (~21 min a run) but 2.0-3.2 s on 2 AVX2-only EPYC cores (44-69 min: two such machines; README "What it costs"):
    # on AVX2 two thirds of a step is the backward pass, whose weight gradients oneDNN computes on its generic gemm
    # path (benchmarks/bench_train_step.py); held-out scores: benchmarks/bench_real.py.
    "cpu": {"size": 64, "epochs": 40, "steps_per_epoch": 32, "batch_size": 2, "repeats": 5, "val_every": 10, "augment": "multisite",
            "cpu_bf16": True},
}
"""Named starting points for ``train``: ``size`` (cubic grid side) and TrainConfig fields.
"recipe" is the baseline recipe (the dataclass defaults); settings given explicitly win over a preset."""


def train_config_for(preset: str, **given: Any) -> TrainConfig:
    """The preset's TrainConfig, with every setting in ``given`` that is not None in its place."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset '{preset}' ({', '.join(PRESETS)})")
    chosen = {k: v for k, v in PRESETS[preset].items() if k != "size"}
    chosen.update({k: v for k, v in given.items() if v is not None})
    return TrainConfig(**chosen)


def preset_size(preset: str) -> tuple[int, int, int]:
    """The preset's network grid (the recipe's where the preset does not set one)."""
    side = PRESETS[preset].get("size")
    return (side,) * 3 if side else PreprocessConfig().size


@dataclass(frozen=True)
class ExperimentConfig:
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = "recipe"  # where the settings not given explicitly came from (PRESETS)
    gliomaseg_version: str = __version__

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ExperimentConfig:
        def build(kind: type, values: dict[str, Any]) -> Any:
            known = {f.name for f in fields(kind)}
            unknown = set(values) - known
            if unknown:
                raise ValueError(f"unknown {kind.__name__} keys: {', '.join(sorted(unknown))}")
            return kind(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

        train = dict(data.get("train", {}))
        if isinstance(train.get("augment"), bool):
            train["augment"] = "basic" if train["augment"] else "none"

        return cls(
            preprocess=build(PreprocessConfig, data.get("preprocess", {})),
            train=build(TrainConfig, train),
            preset=data.get("preset", "recipe"),
            gliomaseg_version=data.get("gliomaseg_version", "unknown"),
        )

    def save(self, path: Path | str) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: Path | str) -> ExperimentConfig:
        return cls.from_dict(json.loads(Path(path).read_text()))
