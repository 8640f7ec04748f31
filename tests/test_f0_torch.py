"""models/frontends/f0_torch.py: the torch F0 subband front end against the float64 reference vectors and
the numpy front end (batched, short and long clips, both tilings)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_features import VECTOR_NAMES, _vector, _waves

from models.frontends.f0_subband import F0SubbandFrontEnd
from models.frontends.f0_torch import F0SubbandTorch


@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_torch_f0_matches_the_reference_vectors(name: str) -> None:
    wave, ref = _vector(name)
    out = F0SubbandTorch(F0SubbandFrontEnd())(torch.from_numpy(wave)[None])
    assert out.shape == (1, 1, 45, 600) and out.dtype == torch.float32
    assert np.abs(out[0].double().numpy() - ref).max() < 1e-4


@pytest.mark.parametrize("tiling", ["mirror", "repeat"])
def test_torch_f0_equals_the_numpy_front_end(tiling: str) -> None:
    """A batch of equal-length clips, and clips from one sample to longer than 80,000 samples."""
    numpy_fe = F0SubbandFrontEnd(tiling=tiling, n_frames=200)
    torch_fe = F0SubbandTorch(numpy_fe)
    batch = _waves(9000, 9000, 9000, seed=3)
    np.testing.assert_allclose(torch_fe(torch.from_numpy(np.stack(batch))).numpy(), numpy_fe.extract(batch),
                               rtol=0, atol=1e-5)
    for wave in _waves(1, 129, 1729, 26000, 96000, seed=4):
        np.testing.assert_allclose(torch_fe(torch.from_numpy(wave)[None]).numpy(), numpy_fe.extract([wave]),
                                   rtol=0, atol=1e-5)
