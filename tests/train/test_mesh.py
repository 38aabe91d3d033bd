"""The device mesh: axis sizes from the config."""
from __future__ import annotations

import pytest

from tvad_jax.train.mesh import MeshConfig, mesh_shape


def test_mesh_shape_fills_the_free_axis():
    assert mesh_shape(MeshConfig(data=-1, fsdp=2, tensor=1), 8) == (4, 2, 1)
    assert mesh_shape(MeshConfig(data=2, fsdp=1, tensor=-1), 8) == (2, 1, 4)
    assert mesh_shape(MeshConfig(data=1, fsdp=1, tensor=1), 1) == (1, 1, 1)
    with pytest.raises(ValueError, match="at most one"):
        mesh_shape(MeshConfig(data=-1, fsdp=-1), 8)
    with pytest.raises(ValueError, match="cannot be split"):
        mesh_shape(MeshConfig(data=-1, tensor=3), 8)
    with pytest.raises(ValueError, match="needs 4 devices"):
        mesh_shape(MeshConfig(data=2, tensor=2), 8)
