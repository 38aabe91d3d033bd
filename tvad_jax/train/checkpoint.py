"""Checkpoints through orbax: train state and data-iterator state saved together, atomically.

This is the only module of the project that imports orbax. One `CheckpointManager` holds two
items per step:

  state  the TrainState (global jax.Arrays; orbax writes each shard from its owning process)
  data   the data iterator's `get_state()`, one JSON file per process
         (`process_<i>-of-<n>.json`), since every process reads a different slice of the data

Saves are asynchronous (the arrays are copied off the device before `save` returns, so the
next step may donate them). Retention keeps the union of the last `keep_last` checkpoints and
the `keep_best` best by a validation metric. A checkpoint only becomes visible once committed,
so a run killed mid-save resumes from the previous complete one.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Literal

import jax
import orbax.checkpoint as ocp
from etils import epath
from orbax.checkpoint import checkpoint_managers as policies

from tvad_jax import config as config_lib


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
    """When to save and what to keep.

    Attributes:
      every_steps: save every this many train steps (and always at the end); 0 = only at the end.
      keep_last: keep the latest K checkpoints.
      keep_best: also keep the best K by `best_metric` (0 or an empty metric: no keep-best).
      best_metric: name of the validation metric (a key of the eval function's result).
      best_mode: "min" if lower is better, "max" if higher is better.
      async_save: write in the background while training goes on.
      resume: restore the latest checkpoint of the run folder if there is one.
    """

    every_steps: int = 1000
    keep_last: int = 2
    keep_best: int = 1
    best_metric: str = ""
    best_mode: Literal["min", "max"] = "min"
    async_save: bool = True
    resume: bool = True

    def __post_init__(self):
        config_lib.check_at_least(self, 0, "every_steps", "keep_last", "keep_best")


@dataclasses.dataclass
class _IteratorStateSave(ocp.args.CheckpointArgs):
    state_json: str


@dataclasses.dataclass
class _IteratorStateRestore(ocp.args.CheckpointArgs):
    pass


class _IteratorStateHandler(ocp.CheckpointHandler):
    """Writes each process's iterator state (captured when `save` is called) as JSON."""

    def _file(self, directory: epath.Path) -> epath.Path:
        return directory / f"process_{jax.process_index()}-of-{jax.process_count()}.json"

    def save(self, directory: epath.Path, args: _IteratorStateSave) -> None:
        self._file(directory).write_text(args.state_json)

    def restore(self, directory: epath.Path, args: _IteratorStateRestore | None = None) -> str:
        path = self._file(directory)
        if not path.exists():
            raise FileNotFoundError(
                f"{path} missing: the checkpoint was written by a different number of processes")
        return path.read_text()

    def metadata(self, directory: epath.Path) -> None:
        return None

    def finalize(self, directory: epath.Path) -> None:
        pass

    def close(self) -> None:
        pass


ocp.args.register_with_handler(_IteratorStateHandler, for_save=True)(_IteratorStateSave)
ocp.args.register_with_handler(_IteratorStateHandler, for_restore=True)(_IteratorStateRestore)


def _encode_iterator_state(state: Any) -> str:
    if isinstance(state, bytes):
        return json.dumps({"__bytes__": state.decode("latin-1")})
    return json.dumps(state)


def _decode_iterator_state(text: str) -> Any:
    state = json.loads(text)
    if isinstance(state, dict) and set(state) == {"__bytes__"}:
        return state["__bytes__"].encode("latin-1")
    return state


class Checkpointer:
    """Saves and restores (TrainState, iterator state) pairs under one directory."""

    def __init__(self, directory: str | Path, config: CheckpointConfig):
        self.config = config
        self.directory = Path(directory).absolute()
        keep = [policies.LatestN(n=max(1, config.keep_last))]
        best_fn = None
        if config.best_metric:
            metric = config.best_metric
            best_fn = lambda m: m[metric]  # noqa: E731
            if config.keep_best > 0:
                keep.append(policies.BestN(
                    get_metric_fn=best_fn,
                    # BestN keeps the *last* n after sorting ascending (descending if reverse).
                    reverse=config.best_mode == "min",
                    n=config.keep_best,
                    keep_checkpoints_without_metrics=False,
                ))
        options = ocp.CheckpointManagerOptions(
            # best_fn/best_mode only make orbax store the metrics beside each checkpoint;
            # which checkpoints are kept is decided by the preservation policy alone.
            best_fn=best_fn,
            best_mode=config.best_mode,
            preservation_policy=policies.AnyPreservationPolicy(keep),
            enable_async_checkpointing=config.async_save,
            cleanup_tmp_directories=True,
            create=True,
        )
        self._manager = ocp.CheckpointManager(self.directory, item_names=("state", "data"),
                                              options=options)

    def save(self, step: int, state: Any, data_iterator: Any,
             metrics: dict[str, float] | None = None) -> bool:
        """Start saving `state` and the iterator's current state as checkpoint `step`.

        Every process must call this. `state` must hold global arrays (as the train step's
        outputs are). Returns once the arrays are off the device; writing goes on in the
        background when `async_save`.
        """
        if metrics is not None and self.config.best_metric:
            if self.config.best_metric not in metrics:
                raise KeyError(f"best_metric {self.config.best_metric!r} not among the eval "
                               f"metrics {sorted(metrics)}")
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=_IteratorStateSave(_encode_iterator_state(data_iterator.get_state())),
        )
        return self._manager.save(step, args=args, metrics=metrics, force=True)

    def restore(self, step: int, abstract_state: Any, data_iterator: Any | None = None) -> Any:
        """The TrainState of checkpoint `step`, laid out as `abstract_state` says.

        `abstract_state` is a tree of `jax.ShapeDtypeStruct`s with shardings (see
        `state.abstract_with_shardings`). When `data_iterator` is given, its state is set too.
        """
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        if data_iterator is not None:
            items["data"] = _IteratorStateRestore()
        restored = self._manager.restore(step, args=ocp.args.Composite(**items))
        if data_iterator is not None:
            data_iterator.set_state(_decode_iterator_state(restored["data"]))
        return restored["state"]

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def metrics(self, step: int) -> dict | None:
        return self._manager.metrics(step)

    def best_step(self) -> int | None:
        """The kept step with the best `best_metric`, or None without keep-best."""
        if not self.config.best_metric:
            return None
        scored = [(m[self.config.best_metric], s) for s in self.all_steps()
                  if (m := self.metrics(s)) and self.config.best_metric in m]
        if not scored:
            return None
        pick = min if self.config.best_mode == "min" else max
        return pick(scored)[1]

    def step_dir(self, step: int) -> Path:
        return self.directory / str(step)

    def wait(self) -> None:
        """Block until pending saves (and the start-up clean-up of partial saves) are done."""
        self._await_cleanup()
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._await_cleanup()
        self._manager.close()

    def _await_cleanup(self) -> None:
        # Orbax removes the leftovers of interrupted saves in the background from __init__ on
        # and waits for that only in `save`; a manager closed without saving would otherwise
        # shut its executor under the clean-up (orbax 0.12.8).
        getattr(self._manager, "_maybe_await_cleanup_tmp_directory", lambda: None)()
