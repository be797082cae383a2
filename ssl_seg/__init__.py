"""medseg-lab semi-supervised segmentation: data, backbones, methods, one training loop."""

__version__ = "0.1.0"
