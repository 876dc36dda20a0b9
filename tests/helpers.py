"""Small helpers shared by the tests."""
from manifold_vae import ModelConfig, build_model


def build(data_dim: int, latent="S1", *, embedding=None, **keys):
    """The library's model for ``data_dim`` columns from config keys (an embedding module makes the
    latent's embedding ``"learned"``)."""
    latent = latent if isinstance(latent, str) else latent.spec
    if embedding is not None:
        keys.setdefault("embedding", "learned")
    return build_model(ModelConfig(latent=latent, **keys), data_dim, embedding=embedding)
