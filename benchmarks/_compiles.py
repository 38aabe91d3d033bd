"""jax's compiles during a benchmark, from jax.monitoring's duration events.

    with CompileClock(TRACE_LOWER_COMPILE) as clock:
        clock.phase = "warmup"; ...; clock.phase = "timed"; ...
    clock.seconds["warmup"], clock.count["timed"]   # seconds of the events, backend compiles
"""
from __future__ import annotations

from collections import Counter

import jax

BACKEND_COMPILE = "/jax/core/compile/backend_compile_duration"
TRACE_LOWER_COMPILE = ("/jax/core/compile/jaxpr_trace_duration",
                       "/jax/core/compile/jaxpr_to_mlir_module_duration",
                       BACKEND_COMPILE)


class CompileClock:
    """Seconds of `events` and the number of XLA backend compiles, attributed to
    `self.phase` (Counters keyed by phase)."""

    def __init__(self, events: tuple[str, ...] = (BACKEND_COMPILE,)):
        self.events = events
        self.phase = "setup"
        self.seconds: Counter = Counter()
        self.count: Counter = Counter()

    def __call__(self, event: str, duration: float, **kwargs) -> None:
        if event in self.events:
            self.seconds[self.phase] += duration
            if event == BACKEND_COMPILE:
                self.count[self.phase] += 1

    def __enter__(self):
        jax.monitoring.register_event_duration_secs_listener(self)
        return self

    def __exit__(self, *exc):
        jax.monitoring.unregister_event_duration_listener(self)
