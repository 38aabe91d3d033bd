"""The pure train step shared by all stages, and its jitted, sharded form.

A stage supplies `loss_fn(trainable, frozen, batch, rng) -> (loss, metrics)`: a scalar loss and
a dict of scalar arrays. The step differentiates with respect to `trainable` only, folds the
step number into the RNG, applies the optax update, and refuses non-finite updates: if the loss
or any gradient is NaN/inf, params and optimizer state are kept unchanged (the step counter
still advances) and `metrics["skipped"]` is 1. Whether the run then stops or goes on is the
loop's choice (`TrainLoopConfig.nonfinite`). Nothing in the step syncs with the host.
"""
from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from tvad_jax.train.state import TrainState

LossFn = Callable[[Any, Any, Any, jax.Array], tuple[jax.Array, dict[str, jax.Array]]]
StepFn = Callable[[TrainState, Any, Any, jax.Array], tuple[TrainState, dict[str, jax.Array]]]


def make_train_step(loss_fn: LossFn, tx: optax.GradientTransformation,
                    lr_at: Callable[[jax.Array], jax.Array] | None = None) -> StepFn:
    """`step(state, frozen, batch, rng) -> (state, metrics)`, pure and jit-able.

    `rng` is the run's base key; the step uses `fold_in(rng, state.step)`, so a resumed run
    draws the same random numbers as an uninterrupted one.
    """

    def step(state: TrainState, frozen: Any, batch: Any, rng: jax.Array):
        step_rng = jax.random.fold_in(rng, state.step)
        grad_fn = jax.value_and_grad(loss_fn, argnums=0, has_aux=True)
        (loss, aux), grads = grad_fn(state.params, frozen, batch, step_rng)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        finite = jnp.isfinite(loss) & _all_finite(grads)
        keep = lambda new, old: jnp.where(finite, new, old)  # noqa: E731
        params = jax.tree.map(keep, params, state.params)
        opt_state = jax.tree.map(keep, opt_state, state.opt_state)
        metrics = {"loss": loss, "grad_norm": optax.tree.norm(grads),
                   "skipped": (~finite).astype(jnp.int32), **aux}
        if lr_at is not None:
            metrics["lr"] = lr_at(state.step)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return step


def jit_train_step(step: StepFn, mesh: Mesh, state_sharding: TrainState, frozen_sharding: Any,
                   batch_sharding: NamedSharding) -> StepFn:
    """The step jitted once with explicit in/out shardings; the input state is donated."""
    replicated = NamedSharding(mesh, P())
    return jax.jit(
        step,
        in_shardings=(state_sharding, frozen_sharding, batch_sharding, replicated),
        out_shardings=(state_sharding, replicated),
        donate_argnums=(0,),
    )


def _all_finite(tree: Any) -> jax.Array:
    leaves = jax.tree.leaves(tree)
    if not leaves:
        return jnp.array(True)
    return jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]).all()
