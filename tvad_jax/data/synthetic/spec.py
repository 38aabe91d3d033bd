"""The benchmark's vocabulary and its configuration: colours, behaviours, anomaly types, splits."""
from __future__ import annotations

import dataclasses

# Named colours (RGB in [0, 1]); the names are what the text annotations say.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.15, 0.12),
    "blue": (0.15, 0.3, 0.85),
    "green": (0.15, 0.65, 0.2),
    "yellow": (0.95, 0.85, 0.15),
    "white": (0.95, 0.95, 0.95),
    "black": (0.08, 0.08, 0.08),
    "orange": (0.95, 0.5, 0.1),
    "purple": (0.55, 0.2, 0.7),
    "brown": (0.5, 0.3, 0.15),
    "gray": (0.55, 0.55, 0.55),
}

# Behaviour labels of the timelines. Normal ones first, then the anomaly types.
NORMAL_BEHAVIOURS = ("walking", "standing", "crossing", "driving", "yielding", "riding",
                     "flying")
ANOMALY_TYPES = (
    "running",              # a pedestrian suddenly runs
    "falling",              # a pedestrian falls and stays down
    "jaywalking",           # a pedestrian crosses the road away from the crossing
    "fighting",             # two pedestrians jostle on the spot
    "loitering",            # a pedestrian circles on the spot
    "wrong_way",            # a car drives against its lane's direction
    "car_on_sidewalk",      # a car leaves the road onto the sidewalk
    "cyclist_on_sidewalk",  # a cyclist rides on the sidewalk
    "sudden_stop",          # a car stops abruptly in the road, away from the crossing
    "throwing",             # a pedestrian throws an object across the street
)

# Splits added later come last so that adding them left every other video unchanged.
SPLITS = ("train", "val", "test", "train_normal", "test_seen", "pretrain")


@dataclasses.dataclass(frozen=True)
class SynthConfig:
    """How `tvad data synth` builds the benchmark.

    The anomaly types of train, val and test must be disjoint (UBnormal's open set);
    `train_normal` holds only normal videos (the ShanghaiTech-style unsupervised setting);
    `test_seen` holds unseen videos of the training anomaly types (the closed-set test);
    `pretrain` (none by default) is a larger corpus for backbone pretraining alone, of normal
    traffic and the training anomaly types, so that the val and test types stay unseen.
    """

    out_dir: str = "data/synthetic"
    seed: int = 0
    height: int = 96
    width: int = 96
    num_frames: int = 64
    fps: int = 30
    num_scenes: int = 12
    videos_train: int = 80
    videos_val: int = 24
    videos_test: int = 56
    videos_train_normal: int = 40
    videos_test_seen: int = 40
    videos_pretrain: int = 0
    abnormal_fraction: float = 0.5
    train_anomalies: tuple[str, ...] = ("running", "jaywalking", "wrong_way",
                                        "cyclist_on_sidewalk")
    val_anomalies: tuple[str, ...] = ("loitering", "sudden_stop")
    test_anomalies: tuple[str, ...] = ("falling", "fighting", "car_on_sidewalk", "throwing")
    min_anomaly_frames: int = 8
    crf: int = 18
    workers: int = 2

    def videos_in(self, split: str) -> int:
        return getattr(self, f"videos_{split}")

    def anomalies_in(self, split: str) -> tuple[str, ...]:
        if split == "train_normal":
            return ()
        if split in ("test_seen", "pretrain"):
            return self.train_anomalies
        return getattr(self, f"{split}_anomalies")

    def validate(self) -> None:
        sets = [set(self.anomalies_in(s)) for s in ("train", "val", "test")]
        for name, types in zip(("train", "val", "test"), sets):
            unknown = types - set(ANOMALY_TYPES)
            if unknown:
                raise ValueError(f"{name}_anomalies: unknown anomaly types {sorted(unknown)}")
            if not types and self.videos_in(name) and self.abnormal_fraction > 0:
                raise ValueError(f"{name}_anomalies is empty but the split has abnormal videos")
        if sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2]:
            raise ValueError("open-set splits need disjoint anomaly types for train/val/test")
        if self.height % 2 or self.width % 2:
            raise ValueError("height and width must be even (H.264 yuv420p)")
        if self.num_frames < 2 * self.min_anomaly_frames:
            raise ValueError("num_frames must be at least twice min_anomaly_frames")
