"""Street scenes: a fixed camera over a horizontal road with two lanes, two sidewalks, a
zebra crossing, buildings above and grass below, plus static props (hedges, lamp posts,
trees) that occlude whatever stands behind them.

Depth is the y of an object's base: larger y is nearer the camera and is drawn later.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tvad_jax.data.synthetic.raster import Canvas


@dataclasses.dataclass(frozen=True)
class Prop:
    """A static occluder; `base_y` orders it among the agents."""

    kind: str  # "hedge" | "pole" | "tree"
    x: float
    base_y: float
    size: float


@dataclasses.dataclass(frozen=True)
class Scene:
    """Layout (output pixels) and palette of one camera view."""

    index: int
    height: int
    width: int
    road_top: float
    road_bottom: float
    sidewalk: float          # sidewalk depth in pixels
    crossing_x: float        # centre of the zebra crossing
    crossing_half: float     # half width of the zebra crossing
    road_color: tuple
    sidewalk_color: tuple
    grass_color: tuple
    building_colors: tuple
    props: tuple[Prop, ...]

    @property
    def upper_walk(self) -> tuple[float, float]:
        """y range of feet on the upper sidewalk."""
        return self.road_top - 0.85 * self.sidewalk, self.road_top - 0.1 * self.sidewalk

    @property
    def lower_walk(self) -> tuple[float, float]:
        return self.road_bottom + 0.25 * self.sidewalk, self.road_bottom + 0.95 * self.sidewalk

    def lane_base(self, lane: int) -> float:
        """Wheel-base y of lane 0 (upper, traffic moves left) or 1 (lower, moves right)."""
        height = self.road_bottom - self.road_top
        return self.road_top + (0.45 if lane == 0 else 0.92) * height

    @staticmethod
    def lane_direction(lane: int) -> int:
        return -1 if lane == 0 else 1

    def near_crossing(self, x: float, margin: float = 0.0) -> bool:
        return abs(x - self.crossing_x) <= self.crossing_half + margin

    def zone(self, x: float, base_y: float) -> str:
        """Where a point on the ground is: "road", "crossing", "sidewalk", "grass" (below the
        lower sidewalk) or "buildings" (above the upper one)."""
        if self.road_top <= base_y <= self.road_bottom:
            return "crossing" if self.near_crossing(x) else "road"
        if self.road_top - self.sidewalk <= base_y <= self.road_bottom + self.sidewalk:
            return "sidewalk"
        return "grass" if base_y > self.road_bottom else "buildings"


def make_scene(index: int, height: int, width: int, seed: int) -> Scene:
    """Scene `index` of the benchmark; the same (index, seed) always gives the same scene."""
    rng = np.random.default_rng([seed, 7919, index])
    road_top = height * rng.uniform(0.42, 0.5)
    road_bottom = road_top + height * rng.uniform(0.26, 0.3)
    sidewalk = height * rng.uniform(0.12, 0.15)
    gray = rng.uniform(0.25, 0.4)
    props = []
    for _ in range(rng.integers(1, 3)):   # hedges along the upper sidewalk's kerb
        props.append(Prop("hedge", rng.uniform(0.1, 0.9) * width,
                          road_top - 0.3 * sidewalk, rng.uniform(0.12, 0.25) * width))
    for _ in range(rng.integers(1, 3)):   # lamp posts on the lower kerb
        props.append(Prop("pole", rng.uniform(0.05, 0.95) * width, road_bottom + 0.15 * sidewalk,
                          height * 0.3))
    if rng.random() < 0.5:                # a tree on the grass
        props.append(Prop("tree", rng.uniform(0.1, 0.9) * width,
                          road_bottom + 1.3 * sidewalk, height * 0.045))
    return Scene(
        index=index, height=height, width=width, road_top=road_top, road_bottom=road_bottom,
        sidewalk=sidewalk, crossing_x=width * rng.uniform(0.3, 0.7),
        crossing_half=width * rng.uniform(0.05, 0.07),
        road_color=(gray, gray, gray * rng.uniform(0.95, 1.1)),
        sidewalk_color=tuple(rng.uniform(0.6, 0.8) * np.array([1.0, 0.97, 0.9])),
        grass_color=(rng.uniform(0.2, 0.35), rng.uniform(0.45, 0.6), rng.uniform(0.15, 0.3)),
        building_colors=tuple(tuple(rng.uniform(0.3, 0.8, 3)) for _ in range(4)),
        props=tuple(props),
    )


def render_background(scene: Scene, seed: int) -> np.ndarray:
    """The empty street, [H, W, 3] float32 in [0, 1], with a fixed texture."""
    h, w = scene.height, scene.width
    rows = np.arange(h)[:, None] + 0.5
    img = np.empty((h, w, 3), np.float32)
    img[:] = scene.grass_color
    up_walk = scene.road_top - scene.sidewalk
    img[(rows[:, 0] < up_walk)] = scene.building_colors[0]
    # Buildings: blocks of different colours with window rows.
    rng = np.random.default_rng([seed, 104729, scene.index])
    x = 0
    while x < w:
        bw = int(rng.integers(w // 6, w // 3))
        top = int(rng.uniform(0.0, 0.5) * up_walk)
        color = scene.building_colors[int(rng.integers(len(scene.building_colors)))]
        img[: int(up_walk), x:x + bw] = np.array(scene.building_colors[0]) * 0.6
        img[top: int(up_walk), x:x + bw] = color
        for wy in range(top + 2, int(up_walk) - 3, 5):
            for wx in range(x + 2, x + bw - 2, 4):
                img[wy:wy + 2, wx:wx + 2] = (0.2, 0.25, 0.35)
        x += bw
    walk = ((rows >= up_walk) & (rows < scene.road_top)) | \
        ((rows >= scene.road_bottom) & (rows < scene.road_bottom + scene.sidewalk))
    img[walk[:, 0]] = scene.sidewalk_color
    road = (rows[:, 0] >= scene.road_top) & (rows[:, 0] < scene.road_bottom)
    img[road] = scene.road_color
    mid = int((scene.road_top + scene.road_bottom) / 2)
    img[mid, (np.arange(w) // 6) % 2 == 0] = (0.9, 0.9, 0.85)   # dashed centre line
    cols = np.arange(w)
    zebra = (np.abs(cols + 0.5 - scene.crossing_x) <= scene.crossing_half)
    stripes = ((np.arange(h) // 2) % 2 == 0)[:, None] & road[:, None] & zebra[None, :]
    img[stripes] = (0.92, 0.92, 0.9)
    texture = rng.normal(0.0, 0.02, (h, w, 1)).astype(np.float32)
    return np.clip(img + texture, 0.0, 1.0)


def draw_prop(canvas: Canvas, prop: Prop) -> None:
    """Props carry id 0: they hide objects behind them."""
    if prop.kind == "hedge":
        x0, x1 = prop.x - prop.size / 2, prop.x + prop.size / 2
        canvas.polygon(np.array([[x0, prop.base_y - 3.0], [x1, prop.base_y - 3.0],
                                 [x1, prop.base_y], [x0, prop.base_y]]), (0.1, 0.4, 0.12))
    elif prop.kind == "pole":
        canvas.segment((prop.x, prop.base_y), (prop.x, prop.base_y - prop.size), 1.0,
                       (0.2, 0.2, 0.22))
        canvas.disc(prop.x, prop.base_y - prop.size, 1.2, (0.95, 0.9, 0.6))
    else:
        canvas.segment((prop.x, prop.base_y), (prop.x, prop.base_y - 6.0), 1.5, (0.35, 0.2, 0.1))
        canvas.disc(prop.x, prop.base_y - 6.0 - prop.size, prop.size, (0.1, 0.45, 0.15))
