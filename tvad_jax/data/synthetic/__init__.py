"""The procedural surveillance benchmark (the embedded default dataset)."""
