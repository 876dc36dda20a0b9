"""Embeddings ``f: Z -> M``: exact maps, learned WAE-MMD maps, volume elements and quality."""
from .density import jacobian, log_volume_element, pushforward_log_density, volume_element
from .exact import ExactEmbedding
from .learned import (EmbedConfig, LearnedEmbedding, fit_learned_embedding, load_embedding,
                      save_embedding)
from .mmd import imq_mmd2, imq_scales
from .quality import embedding_quality

__all__ = ["ExactEmbedding", "LearnedEmbedding", "EmbedConfig", "fit_learned_embedding",
           "load_embedding", "save_embedding", "embedding_quality", "imq_mmd2", "imq_scales",
           "jacobian", "log_volume_element", "volume_element", "pushforward_log_density"]
