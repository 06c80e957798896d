"""xdc: self-supervised audio-visual pretraining by Cross-Modal Deep Clustering."""

__version__ = "0.1.0"
