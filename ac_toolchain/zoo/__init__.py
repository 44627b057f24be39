"""Model zoo: a registry of builders (lenet5, vgg16, resnet18/34/50, resnext29, mobilenetv2) and user models."""

from ac_toolchain.zoo import lenet, mobilenet, resnet, resnext, vgg  # noqa: F401  (registers the builders)
from ac_toolchain.zoo.registry import MODELS, build_model, model_names, register_model

__all__ = ["MODELS", "build_model", "model_names", "register_model"]
