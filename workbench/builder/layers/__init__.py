"""Modules with parameters from which model families are written."""

from workbench.builder.layers.attention import Attention
from workbench.builder.layers.basic import Embedding, LayerNorm, Linear, RmsNorm
from workbench.builder.layers.decoder import DecoderLayer
from workbench.builder.layers.mlp import GatedMLP
from workbench.builder.layers.module import Module, ModuleList, Parameter

__all__ = ["Attention", "DecoderLayer", "Embedding", "GatedMLP", "LayerNorm", "Linear", "Module", "ModuleList",
           "Parameter", "RmsNorm"]
