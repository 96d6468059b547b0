"""FasterViT: Fast Vision Transformers with Hierarchical Attention, built step by step."""

__version__ = "0.1.0"
