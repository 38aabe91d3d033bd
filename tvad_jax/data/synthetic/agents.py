"""Agents and their behaviour plans: where each object is, how it is posed, and what it is
doing in every frame. Normal traffic and the ten anomaly types are built here; drawing is in
`sprites.py`.

Positions are the base centre of an object (feet, wheels) in output pixels. A plan is built
from per-frame velocities anchored at one frame, so that an event can be placed in view.
"""
from __future__ import annotations

import dataclasses

import numpy as np

from tvad_jax.data.synthetic.scene import Scene
from tvad_jax.data.synthetic.spec import COLORS

COLOR_NAMES = tuple(COLORS)


@dataclasses.dataclass
class Agent:
    """One object's appearance and per-frame state over the T frames of a video."""

    obj_id: int
    kind: str                  # "person" | "car" | "cyclist" | "object"
    attributes: dict
    x: np.ndarray              # [T] base centre x
    y: np.ndarray              # [T] base centre y (also its depth)
    facing: np.ndarray         # [T] +1 right, -1 left
    labels: list[str]          # [T] behaviour per frame
    angle: np.ndarray = None   # [T] body rotation in degrees (falling)
    gait: np.ndarray = None    # [T] walking phase in radians
    arm_up: np.ndarray = None  # [T] bool, raised arm (throwing, fighting)
    present: np.ndarray = None  # [T] bool, exists in this frame
    anomaly_type: str | None = None
    planned_anomaly: tuple[int, int] | None = None  # inclusive frame range of the event

    def __post_init__(self):
        t = len(self.x)
        self.angle = np.zeros(t, np.float32) if self.angle is None else self.angle
        self.gait = np.zeros(t, np.float32) if self.gait is None else self.gait
        self.arm_up = np.zeros(t, bool) if self.arm_up is None else self.arm_up
        self.present = np.ones(t, bool) if self.present is None else self.present

    def timeline(self) -> list[dict]:
        """Behaviour segments [{label, start, end}] (inclusive) over the frames it exists."""
        segments = []
        for t, (label, here) in enumerate(zip(self.labels, self.present)):
            if not here:
                continue
            if segments and segments[-1]["label"] == label and segments[-1]["end"] == t - 1:
                segments[-1]["end"] = t
            else:
                segments.append({"label": label, "start": t, "end": t})
        return segments


class Planner:
    """Builds agents for one video of scene `scene` with `num_frames` frames."""

    def __init__(self, scene: Scene, num_frames: int, rng: np.random.Generator):
        self.scene, self.T, self.rng = scene, num_frames, rng
        self.scale = scene.width / 96.0
        self._next_id = 1

    # ----------------------------------------------------------------- helpers
    def _new_id(self) -> int:
        obj_id = self._next_id
        self._next_id += 1
        if obj_id > 255:
            raise ValueError("more than 255 objects in one video")
        return obj_id

    def _path(self, vx, vy, anchor_t: int, anchor_x: float, anchor_y: float):
        """Positions from per-frame velocities, passing (anchor_x, anchor_y) at anchor_t."""
        x = np.concatenate([[0.0], np.cumsum(vx[1:])])
        y = np.concatenate([[0.0], np.cumsum(vy[1:])])
        return (x - x[anchor_t] + anchor_x).astype(np.float32), \
            (y - y[anchor_t] + anchor_y).astype(np.float32)

    def _gait(self, speed: np.ndarray) -> np.ndarray:
        return np.cumsum(np.abs(speed) * 0.9 / self.scale).astype(np.float32)

    def _walk_y(self, side: str) -> float:
        lo, hi = self.scene.upper_walk if side == "upper" else self.scene.lower_walk
        return float(self.rng.uniform(lo, hi))

    def _person_attributes(self) -> dict:
        rng = self.rng
        top, bottom = rng.choice(COLOR_NAMES, 2, replace=False)
        return {"top": str(top), "bottom": str(bottom),
                "bag": str(rng.choice(COLOR_NAMES)) if rng.random() < 0.35 else None,
                "height": str(rng.choice(["short", "medium", "tall"]))}

    def _person(self, x, y, vx, labels, **kw) -> Agent:
        facing = np.where(vx > 0, 1, np.where(vx < 0, -1, 0)).astype(np.int8)
        for t in range(1, len(facing)):  # keep the last facing while standing still
            facing[t] = facing[t] or facing[t - 1]
        facing[facing == 0] = 1
        speed = kw.pop("speed", vx)
        return Agent(self._new_id(), "person", self._person_attributes(), x, y, facing, labels,
                     gait=kw.pop("gait", self._gait(speed)), **kw)

    def _random_anchor(self) -> tuple[int, float]:
        return int(self.rng.integers(0, self.T)), float(self.rng.uniform(-0.2, 1.2) *
                                                         self.scene.width)

    # ----------------------------------------------------------------- normal traffic
    def walker(self, side: str | None = None) -> Agent:
        """A pedestrian on a sidewalk; may pause or use the zebra crossing."""
        rng, T, scene = self.rng, self.T, self.scene
        side = side or str(rng.choice(["upper", "lower"]))
        speed = rng.uniform(0.3, 0.55) * self.scale
        direction = rng.choice([-1, 1])
        vx = np.full(T, direction * speed)
        vy = np.zeros(T)
        labels = ["walking"] * T
        anchor_t, anchor_x = self._random_anchor()
        anchor_y = self._walk_y(side)
        roll = rng.random()
        if roll < 0.25:  # pause a while
            start = int(rng.integers(0, int(0.85 * T)))
            stop = start + int(rng.integers(T // 8, T // 2.5))
            vx[start:stop] = 0.0
            labels[start:stop] = ["standing"] * len(labels[start:stop])
        elif roll < 0.5:  # use the crossing
            start = int(rng.integers(2, int(0.7 * T)))
            target = self._walk_y("lower" if side == "upper" else "upper")
            steps = int(abs(target - anchor_y) / speed)
            stop = min(start + steps, T)
            vx[start:stop] = 0.0
            vy[start:stop] = np.sign(target - anchor_y) * speed
            labels[start:stop] = ["crossing"] * (stop - start)
            anchor_t, anchor_x = start, scene.crossing_x + rng.uniform(-1, 1) * \
                scene.crossing_half * 0.5
        x, y = self._path(vx, vy, anchor_t, anchor_x, anchor_y)
        return self._person(x, y, vx, labels, speed=np.hypot(vx, vy))

    def car(self, lane: int | None = None, fast: bool = False) -> Agent:
        """A car in its lane and direction; may yield before the crossing."""
        rng, T, scene = self.rng, self.T, self.scene
        lane = int(rng.integers(0, 2)) if lane is None else lane
        direction = scene.lane_direction(lane)
        speed = (rng.uniform(2.6, 3.4) if fast else rng.uniform(1.0, 2.2)) * self.scale
        attrs = self._car_attributes()
        v = np.full(T, speed)
        labels = ["driving"] * T
        anchor_t, anchor_x = self._random_anchor()
        if not fast and rng.random() < 0.25:  # yield at the crossing
            start = int(rng.integers(3, int(0.75 * T)))
            stop = start + int(rng.integers(T // 8, T // 3))
            v[start:stop] = 0.0
            labels[start:stop] = ["yielding"] * len(labels[start:stop])
            anchor_t = start
            anchor_x = scene.crossing_x - direction * (scene.crossing_half + attrs["length"] / 2
                                                        + 2 * self.scale)
        x, y = self._path(direction * v, np.zeros(T), anchor_t, anchor_x, scene.lane_base(lane))
        return Agent(self._new_id(), "car", attrs, x, y, np.full(T, direction, np.int8), labels)

    def _car_attributes(self) -> dict:
        size = str(self.rng.choice(["small", "large"]))
        length = (15.0 if size == "small" else 19.0) * self.scale
        return {"color": str(self.rng.choice(COLOR_NAMES)), "size": size, "length": length}

    def cyclist(self, on_sidewalk: bool = False) -> Agent:
        rng, T, scene = self.rng, self.T, self.scene
        lane = int(rng.integers(0, 2))
        direction = scene.lane_direction(lane)
        speed = rng.uniform(0.7, 1.2) * self.scale
        if on_sidewalk:
            direction = int(rng.choice([-1, 1]))
            base = self._walk_y(str(rng.choice(["upper", "lower"])))
        else:
            base = scene.lane_base(lane) - (3.0 if lane == 0 else 1.0) * self.scale
        anchor_t, anchor_x = self._random_anchor()
        if on_sidewalk:  # keep the event in view: centred in the middle of the video
            anchor_t, anchor_x = T // 2, float(rng.uniform(0.3, 0.7) * scene.width)
        label = "cyclist_on_sidewalk" if on_sidewalk else "riding"
        x, y = self._path(np.full(T, direction * speed), np.zeros(T), anchor_t, anchor_x, base)
        attrs = {"color": str(rng.choice(COLOR_NAMES)), "top": str(rng.choice(COLOR_NAMES))}
        agent = Agent(self._new_id(), "cyclist", attrs, x, y, np.full(T, direction, np.int8),
                      [label] * T, gait=self._gait(np.full(T, speed)))
        if on_sidewalk:
            agent.anomaly_type, agent.planned_anomaly = label, (0, T - 1)
        return agent

    def normal_traffic(self, crowd: bool, fast_traffic: bool) -> list[Agent]:
        rng = self.rng
        agents = [self.walker() for _ in range(rng.integers(6, 11) if crowd else
                                               rng.integers(2, 6))]
        agents += [self.car(fast=fast_traffic and rng.random() < 0.7)
                   for _ in range(rng.integers(3, 7) if fast_traffic else rng.integers(1, 4))]
        agents += [self.cyclist() for _ in range(rng.integers(0, 3))]
        return agents

    # ----------------------------------------------------------------- anomalies
    def anomaly(self, kind: str) -> list[Agent]:
        """The agents of one anomalous event of type `kind`."""
        return getattr(self, f"_anomaly_{kind}")()

    def _event_window(self, min_len: int, max_len: int) -> tuple[int, int]:
        """A random event [start, end] of min_len..max_len frames (shortened for short
        videos), starting after frame 4."""
        max_len = min(max_len, self.T - 8)
        length = int(self.rng.integers(min(min_len, max_len), max_len + 1))
        start = int(self.rng.integers(4, max(self.T - length - 2, 5)))
        return start, min(start + length - 1, self.T - 1)

    def _centre_x(self) -> float:
        return float(self.rng.uniform(0.25, 0.75) * self.scene.width)

    def _mark(self, agent: Agent, kind: str, start: int, end: int) -> Agent:
        agent.labels[start:end + 1] = [kind] * (end + 1 - start)
        agent.anomaly_type, agent.planned_anomaly = kind, (start, end)
        return agent

    def _anomaly_running(self) -> list[Agent]:
        rng, T = self.rng, self.T
        start, end = self._event_window(12, 28)
        walk = rng.uniform(0.3, 0.5) * self.scale
        direction = rng.choice([-1, 1])
        vx = np.full(T, direction * walk)
        vx[start:end + 1] *= rng.uniform(3.0, 4.0)
        x, y = self._path(vx, np.zeros(T), start, self._centre_x() - direction * 10 * self.scale,
                          self._walk_y(str(rng.choice(["upper", "lower"]))))
        person = self._person(x, y, vx, ["walking"] * T)
        return [self._mark(person, "running", start, end)]

    def _anomaly_falling(self) -> list[Agent]:
        rng, T = self.rng, self.T
        start = int(rng.integers(T // 8, T - T // 3))
        vx = np.full(T, rng.choice([-1, 1]) * rng.uniform(0.3, 0.5) * self.scale)
        vx[start:] = 0.0
        x, y = self._path(vx, np.zeros(T), start, self._centre_x(),
                          self._walk_y(str(rng.choice(["upper", "lower"]))))
        person = self._person(x, y, vx, ["walking"] * T)
        ramp = np.clip((np.arange(T) - start + 1) / 5.0, 0.0, 1.0)
        person.angle = (90.0 * ramp * person.facing).astype(np.float32)
        return [self._mark(person, "falling", start, T - 1)]

    def _anomaly_jaywalking(self) -> list[Agent]:
        rng, T, scene = self.rng, self.T, self.scene
        side = str(rng.choice(["upper", "lower"]))
        y0, target = self._walk_y(side), self._walk_y("lower" if side == "upper" else "upper")
        speed = rng.uniform(0.55, 0.8) * self.scale
        start = int(rng.integers(4, T // 3))
        steps = int(abs(target - y0) / speed)
        vx = np.full(T, rng.choice([-1, 1]) * speed * 0.7)
        vy = np.zeros(T)
        vx[start:start + steps] = 0.0
        vy[start:start + steps] = np.sign(target - y0) * speed
        x_cross = self._centre_x()
        while scene.near_crossing(x_cross, margin=8 * self.scale):
            x_cross = self._centre_x()
        x, y = self._path(vx, vy, start, x_cross, y0)
        person = self._person(x, y, vx, ["walking"] * T, speed=np.hypot(vx, vy))
        on_road = np.flatnonzero((y > scene.road_top) & (y < scene.road_bottom))
        return [self._mark(person, "jaywalking", int(on_road[0]), int(on_road[-1]))]

    def _anomaly_fighting(self) -> list[Agent]:
        rng, T = self.rng, self.T
        start, end = self._event_window(16, 36)
        centre, base = self._centre_x(), self._walk_y(str(rng.choice(["upper", "lower"])))
        pair = []
        for side in (-1, 1):
            speed = rng.uniform(0.3, 0.5) * self.scale
            vx = np.full(T, -side * speed)   # walk towards the meeting point
            vx[start:end + 1] = 0.0
            vx[end + 1:] = side * speed      # and apart afterwards
            x, y = self._path(vx, np.zeros(T), start, centre + side * 2.5 * self.scale, base)
            shake = rng.normal(0.0, 0.7 * self.scale, (2, end + 1 - start))
            x[start:end + 1] += shake[0]
            y[start:end + 1] += shake[1] * 0.4
            person = self._person(x, y, vx, ["walking"] * T)
            person.facing[start:end + 1] = -side
            person.arm_up[start:end + 1] = rng.random(end + 1 - start) < 0.6
            pair.append(self._mark(person, "fighting", start, end))
        return pair

    def _anomaly_loitering(self) -> list[Agent]:
        rng, T = self.rng, self.T
        start, end = self._event_window(24, 44)
        walk = rng.uniform(0.3, 0.5) * self.scale
        direction = rng.choice([-1, 1])
        vx = np.full(T, direction * walk)
        vy = np.zeros(T)
        loops = rng.uniform(1.2, 2.0)
        phase = np.linspace(0.0, 2 * np.pi * loops, end + 1 - start)
        radius = rng.uniform(4.0, 6.0) * self.scale
        vx[start:end + 1] = -radius * np.sin(phase) * (phase[1] - phase[0]) * direction
        vy[start:end + 1] = 0.35 * radius * np.cos(phase) * (phase[1] - phase[0])
        x, y = self._path(vx, vy, start, self._centre_x(),
                          self._walk_y(str(rng.choice(["upper", "lower"]))))
        person = self._person(x, y, vx, ["walking"] * T, speed=np.hypot(vx, vy))
        return [self._mark(person, "loitering", start, end)]

    def _anomaly_wrong_way(self) -> list[Agent]:
        T, scene = self.T, self.scene
        lane = int(self.rng.integers(0, 2))
        direction = -scene.lane_direction(lane)
        speed = self.rng.uniform(1.0, 1.5) * self.scale
        x, y = self._path(np.full(T, direction * speed), np.zeros(T), T // 2, self._centre_x(),
                          scene.lane_base(lane))
        car = Agent(self._new_id(), "car", self._car_attributes(), x, y,
                    np.full(T, direction, np.int8), ["driving"] * T)
        return [self._mark(car, "wrong_way", 0, T - 1)]

    def _anomaly_car_on_sidewalk(self) -> list[Agent]:
        rng, T, scene = self.rng, self.T, self.scene
        lane = int(rng.integers(0, 2))
        direction = scene.lane_direction(lane)
        speed = rng.uniform(1.0, 1.4) * self.scale
        start = int(rng.integers(T // 4, T // 2))
        walk_y = self._walk_y("upper" if lane == 0 else "lower")
        vy = np.zeros(T)
        steer = 6
        vy[start:start + steer] = (walk_y - scene.lane_base(lane)) / steer
        x, y = self._path(np.full(T, direction * speed), vy, start,
                          self._centre_x() - direction * 10 * self.scale, scene.lane_base(lane))
        car = Agent(self._new_id(), "car", self._car_attributes(), x, y,
                    np.full(T, direction, np.int8), ["driving"] * T)
        return [self._mark(car, "car_on_sidewalk", start, T - 1)]

    def _anomaly_cyclist_on_sidewalk(self) -> list[Agent]:
        return [self.cyclist(on_sidewalk=True)]

    def _anomaly_sudden_stop(self) -> list[Agent]:
        rng, T, scene = self.rng, self.T, self.scene
        lane = int(rng.integers(0, 2))
        direction = scene.lane_direction(lane)
        speed = rng.uniform(1.2, 2.0) * self.scale
        start, end = self._event_window(14, 30)
        v = np.full(T, speed)
        v[start:end + 1] = 0.0
        v[start - 1] = speed * 0.3
        stop_x = self._centre_x()
        while scene.near_crossing(stop_x, margin=14 * self.scale):
            stop_x = self._centre_x()
        x, y = self._path(direction * v, np.zeros(T), start, stop_x, scene.lane_base(lane))
        car = Agent(self._new_id(), "car", self._car_attributes(), x, y,
                    np.full(T, direction, np.int8), ["driving"] * T)
        return [self._mark(car, "sudden_stop", start, end)]

    def _anomaly_throwing(self) -> list[Agent]:
        rng, T, scene = self.rng, self.T, self.scene
        side = str(rng.choice(["upper", "lower"]))
        start = int(rng.integers(T // 10, T - max(T // 3, 12)))
        vx = np.full(T, rng.choice([-1, 1]) * rng.uniform(0.3, 0.5) * self.scale)
        vx[start:] = 0.0
        thrower = self._person(*self._path(vx, np.zeros(T), start, self._centre_x(),
                                           self._walk_y(side)), vx, ["walking"] * T)
        thrower.arm_up[start:start + 5] = True
        # The thrown object: an arc from the raised hand to a landing point on the road.
        launch = start + 3
        flight = int(rng.integers(8, 15))
        land = min(launch + flight, T - 1)
        hand = np.array([thrower.x[launch] + thrower.facing[launch] * 2.0,
                         thrower.y[launch] - 11.0 * self.scale])
        target = np.array([hand[0] + thrower.facing[launch] * rng.uniform(12, 24) * self.scale,
                           rng.uniform(scene.road_top + 3, scene.road_bottom - 2)])
        s = np.clip((np.arange(T) - launch) / flight, 0.0, 1.0)
        lift = rng.uniform(4.0, 8.0) * self.scale * 4 * s * (1 - s)
        x = (hand[0] + s * (target[0] - hand[0])).astype(np.float32)
        y = (hand[1] + s * (target[1] - hand[1]) - lift).astype(np.float32)
        present = (np.arange(T) >= launch) & (np.arange(T) <= land)
        thing = Agent(self._new_id(), "object", {"color": str(rng.choice(COLOR_NAMES))}, x, y,
                      np.full(T, 1, np.int8), ["flying"] * T, present=present)
        self._mark(thing, "throwing", launch, land)
        self._mark(thrower, "throwing", start, land)
        thrower.labels[land + 1:] = ["standing"] * (T - land - 1)
        return [thrower, thing]
