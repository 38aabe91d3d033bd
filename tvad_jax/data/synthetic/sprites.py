"""Sprites: how a person, cyclist, car or thrown object looks in one frame."""
from __future__ import annotations

import numpy as np

from tvad_jax.data.synthetic.agents import Agent
from tvad_jax.data.synthetic.raster import Canvas, rotate
from tvad_jax.data.synthetic.spec import COLORS

SKIN = (0.93, 0.76, 0.6)
TYRE = (0.07, 0.07, 0.07)
HEIGHT_SCALE = {"short": 0.88, "medium": 1.0, "tall": 1.12}


def draw_agent(canvas: Canvas, agent: Agent, t: int, frame_height: int) -> None:
    """Draw `agent` as it is in frame `t` (nothing if it does not exist then)."""
    if not agent.present[t]:
        return
    draw = {"person": _person, "car": _car, "cyclist": _cyclist, "object": _thrown}[agent.kind]
    draw(canvas, agent, t, frame_height / 96.0)


def _person(canvas: Canvas, a: Agent, t: int, scale: float) -> None:
    h = 10.0 * scale * HEIGHT_SCALE[a.attributes["height"]]
    foot = np.array([a.x[t], a.y[t]], np.float32)
    stride = 0.22 * h * np.sin(a.gait[t])
    face = float(a.facing[t])

    def place(points):  # local (upright, feet at origin) -> screen, rotated when falling
        return rotate(np.asarray(points, np.float32) + foot, a.angle[t], pivot=foot)

    top, bottom = COLORS[a.attributes["top"]], COLORS[a.attributes["bottom"]]
    hip = (0.0, -0.45 * h)
    for sign in (-1, 1):
        leg = place([hip, (sign * stride, 0.0)])
        canvas.segment(leg[0], leg[1], 0.2 * h, bottom, a.obj_id)
    canvas.polygon(place([(-0.17 * h, -0.8 * h), (0.17 * h, -0.8 * h), (0.17 * h, -0.42 * h),
                          (-0.17 * h, -0.42 * h)]), top, a.obj_id)
    if a.attributes["bag"]:
        canvas.polygon(place([(-face * 0.17 * h, -0.62 * h), (-face * 0.33 * h, -0.62 * h),
                              (-face * 0.33 * h, -0.4 * h), (-face * 0.17 * h, -0.4 * h)]),
                       COLORS[a.attributes["bag"]], a.obj_id)
    if a.arm_up[t]:
        arm = place([(face * 0.12 * h, -0.75 * h), (face * 0.3 * h, -1.05 * h)])
        canvas.segment(arm[0], arm[1], 0.12 * h, top, a.obj_id)
    head = place([(0.0, -0.91 * h)])[0]
    canvas.disc(head[0], head[1], 0.11 * h, SKIN, a.obj_id)


def _car(canvas: Canvas, a: Agent, t: int, scale: float) -> None:
    length = a.attributes["length"]
    height = 0.42 * length
    x, y, face = a.x[t], a.y[t], float(a.facing[t])
    color = COLORS[a.attributes["color"]]
    half = length / 2
    canvas.polygon(np.array([[x - half, y - 0.55 * height], [x + half, y - 0.55 * height],
                             [x + half, y - 0.12 * height], [x - half, y - 0.12 * height]]),
                   color, a.obj_id)
    cab = np.stack([np.array([-0.3, 0.2, 0.38, -0.42]) * face * length,
                    np.array([-1.0, -1.0, -0.55, -0.55]) * height], axis=1)
    canvas.polygon(cab + np.array([x, y]), color, a.obj_id)
    window = cab * np.array([0.8, 1.0]) + np.array([x, y + 0.12 * height])
    canvas.polygon(window, (0.55, 0.7, 0.85), a.obj_id)
    for wheel in (-0.3, 0.3):
        canvas.disc(x + wheel * length, y - 0.13 * height, 0.13 * height + 0.4, TYRE, a.obj_id)


def _cyclist(canvas: Canvas, a: Agent, t: int, scale: float) -> None:
    x, y, face = a.x[t], a.y[t], float(a.facing[t])
    r = 1.6 * scale
    frame = COLORS[a.attributes["color"]]
    rear, front = np.array([x - face * 3.2 * scale, y - r]), np.array([x + face * 3.2 * scale,
                                                                        y - r])
    for centre in (rear, front):
        canvas.disc(centre[0], centre[1], r, TYRE, a.obj_id)
    seat = np.array([x - face * 0.8 * scale, y - 4.0 * scale])
    canvas.segment(rear, seat, 0.9 * scale, frame, a.obj_id)
    canvas.segment(seat, front, 0.9 * scale, frame, a.obj_id)
    pedal = np.array([x + np.cos(a.gait[t]) * 1.0 * scale, y - r + np.sin(a.gait[t]) * scale])
    canvas.segment(seat, pedal, 1.0 * scale, (0.2, 0.2, 0.3), a.obj_id)
    shoulder = seat + np.array([face * 1.2 * scale, -4.0 * scale])
    canvas.segment(seat, shoulder, 1.8 * scale, COLORS[a.attributes["top"]], a.obj_id)
    canvas.disc(shoulder[0] + face * 0.3 * scale, shoulder[1] - 1.2 * scale, 1.1 * scale, SKIN,
                a.obj_id)


def _thrown(canvas: Canvas, a: Agent, t: int, scale: float) -> None:
    canvas.disc(a.x[t], a.y[t], 1.3 * scale, COLORS[a.attributes["color"]], a.obj_id)
