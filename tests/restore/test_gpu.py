"""CUDA paths: mixed-precision training steps and tiled inference on the GPU (skipped without CUDA)."""

import numpy as np
import pytest
import torch

from degtrans.config import FOVKPNConfig, RestoreConfig, TrainConfig, WienerConfig
from degtrans.restore.coords import fov_coords
from degtrans.restore.infer import restore_array
from degtrans.restore.loop import Budget, build_model, fit, make_optimizer, precision


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["fovkpn", "wiener"])
@pytest.mark.parametrize("bf16", [True, False], ids=["bf16", "fp16-scaler"])
def test_mixed_precision_training_steps_on_cuda(name, bf16, monkeypatch):
    """Both arms of the one policy: bfloat16 where the GPU has it, else float16 with a scaler."""
    if bf16 and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bfloat16")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: bf16)
    dtype, scaler = precision(torch.device("cuda"), amp=True)
    assert dtype == (torch.bfloat16 if bf16 else torch.float16) and (scaler is None) == bf16
    config = TrainConfig(
        model=name, width=8, fovkpn=FOVKPNConfig(offset_channels=8), wiener=WienerConfig(features=6)
    )
    model = build_model(config).cuda()
    optimizer = make_optimizer(model, config.optim)
    psf = torch.zeros(4, 3, 7, 7)
    psf[..., 3, 3] = 1.0
    batch = {
        "degraded": torch.rand(4, 3, 64, 64), "clean": torch.rand(4, 3, 64, 64), "psf": psf,
        "coords": fov_coords(torch.zeros(4), torch.arange(4) * 16, 128, 128, 64, 64),
    }  # fmt: skip
    losses = []
    fit(model, lambda epoch: [batch] * 3, optimizer, config, Budget(epochs=1),
        on_chunk=lambda done, stats: losses.append(stats["loss"]))  # fmt: skip
    assert np.isfinite(losses[0]) and all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.gpu
def test_tiled_inference_on_cuda_matches_cpu():
    model = build_model(TrainConfig(width=8, fovkpn=FOVKPNConfig(offset_channels=8))).eval()
    with torch.no_grad():  # make the network non-trivial so that the comparison means something
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    image = np.random.default_rng(0).random((80, 100, 3)).astype(np.float32)
    config = RestoreConfig(tile_size=48, overlap=8)
    on_cpu = restore_array(image, model=model, config=config, device="cpu", progress=False)
    on_gpu = restore_array(image, model=model, config=config, device="cuda", progress=False)
    np.testing.assert_allclose(on_gpu, on_cpu, atol=2e-3)  # cuDNN vs CPU convolutions (TF32 allowed)
