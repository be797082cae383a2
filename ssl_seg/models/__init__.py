"""Segmentation backbones (U-Net, UNet++, Attention U-Net, FCN-8s; the U-Nets also 3D) and their registry."""

from .attention_unet import AttentionUNet
from .blocks import SegmentationNet
from .fcn import FCN8s
from .registry import MODELS, build_model, model_names, volumetric_model_names
from .unet import UNet
from .unetpp import UNetPlusPlus

__all__ = [
    "MODELS",
    "AttentionUNet",
    "FCN8s",
    "SegmentationNet",
    "UNet",
    "UNetPlusPlus",
    "build_model",
    "model_names",
    "volumetric_model_names",
]
