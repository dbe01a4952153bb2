"""Deployment: ONNX export of backbones, necks and segmentors, and ONNX
Runtime inference with one graph per token bucket (needs the ``deploy``
extra: ``pip install .[deploy]``)."""
from .export import build_model, export_deployment, require_deploy_packages
from .manifest import config_hash, read_manifest
from .onnx_export import export_onnx
from .runtime import (DeployResult, ONNXRuntimeModel, available_providers,
                      check_providers)

__all__ = [
    'export_onnx', 'export_deployment', 'build_model',
    'require_deploy_packages', 'config_hash', 'read_manifest',
    'ONNXRuntimeModel', 'DeployResult', 'available_providers',
    'check_providers'
]
