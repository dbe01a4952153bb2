"""The JSON manifest written next to a deployment's ONNX files.

It names the config (and a hash of its model and preprocessing settings),
the input the graphs take, the buckets and their files (with a SHA-256 of
each), the output names and the mmapt version, so the runtime can refuse
files that do not belong together. Every graph also carries the config hash
in its ONNX metadata (``mmapt_config_hash``).
"""
import hashlib
import json
import os
from typing import Any, Dict, Optional

MANIFEST_NAME = 'deploy.json'
MANIFEST_FORMAT = 'mmapt-onnx/1'
#: ONNX metadata key holding the config hash in every exported graph.
HASH_KEY = 'mmapt_config_hash'


def config_hash(cfg: Any) -> str:
    """SHA-256 of a config's ``model`` settings (its data preprocessor
    included), independent of key order and of the file's path."""
    model = cfg['model']
    if hasattr(model, 'to_dict'):
        model = model.to_dict()
    text = json.dumps(model, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def file_sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_path(directory: str) -> str:
    """The manifest of an export folder (or ``directory`` itself when it is
    the manifest file)."""
    if os.path.isfile(directory):
        return directory
    return os.path.join(directory, MANIFEST_NAME)


def write_manifest(directory: str, manifest: Dict[str, Any]) -> str:
    path = os.path.join(directory, MANIFEST_NAME)
    with open(path, 'w') as f:
        json.dump(manifest, f, indent=2, sort_keys=True)
        f.write('\n')
    return path


def read_manifest(directory: str) -> Dict[str, Any]:
    """The manifest of an export folder; ValueError / FileNotFoundError
    naming the fix when it is missing or not one of ours."""
    path = manifest_path(directory)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f'no {MANIFEST_NAME} in {directory}: give the --out folder of '
            'tools/deployment/export_onnx.py')
    with open(path) as f:
        try:
            manifest = json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f'{path} is not valid JSON ({err}): export '
                             'again with tools/deployment/export_onnx.py')
    if manifest.get('format') != MANIFEST_FORMAT:
        raise ValueError(
            f'{path} has format {manifest.get("format")!r}, expected '
            f'{MANIFEST_FORMAT!r}: export again with this mmapt '
            '(tools/deployment/export_onnx.py)')
    return manifest


def check_config(manifest: Dict[str, Any],
                 cfg: Optional[Any],
                 where: str = 'the manifest') -> None:
    """ValueError when ``cfg`` is not the config the files were exported
    from (its model settings hash differently)."""
    if cfg is None:
        return
    want = manifest['config_hash']
    got = config_hash(cfg)
    if got != want:
        raise ValueError(
            f'{where} was exported from {manifest["config"]} (config hash '
            f'{want[:12]}), but the given config hashes to {got[:12]}: the '
            'model settings differ. Export again from this config, or pass '
            'the config the files came from.')
