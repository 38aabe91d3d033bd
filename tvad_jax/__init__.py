"""tvad_jax: text-guided fine-grained video anomaly detection on JAX/Flax."""

__version__ = "0.1.0"
