"""The examples in ``examples/`` run end to end (on tiny sizes) and give finite numbers."""
import importlib.util
import math
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_plain_loop_uses_only_the_latent_layer():
    res = load("plain_loop").main(["--steps", "30"])
    assert math.isfinite(res["iwae"])


def test_custom_networks_train_with_the_engine_and_resume(tmp_path):
    """A user-written conv encoder and decoder, trained by run_fit on rotated digits; the run
    directory records that the model was built in Python, and load_run rebuilds it only when given
    the same model."""
    import torch

    import manifold_vae as mv
    from manifold_vae.errors import CheckpointError

    example = load("custom_networks")
    out = tmp_path / "run"
    res = example.main(["--steps", "8", "--copies", "1", "--width", "4", "--k", "3",
                        "--out", str(out)])
    m = res.metrics
    assert math.isfinite(m["test_iwae"]) and m["test_iwae"] < 0 and m["latent"] == "S1xR4"
    with pytest.raises(CheckpointError, match="built in Python"):
        mv.load_run(out)
    latent = mv.ManifoldLatent("S1xR4", group_action=True)
    model = mv.VAE(example.Encoder(latent.param_dim, 4), latent,
                   example.Decoder(latent.point_dim, 4), mv.BernoulliLikelihood(256))
    loaded, config, _ = mv.load_run(out, model=model)
    assert config.latent.name == "S1xR4" and config.model.likelihood == "bernoulli"
    assert torch.equal(loaded.decoder.up[-1].bias, res.model.decoder.up[-1].bias)
