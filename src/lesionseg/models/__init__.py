"""Network architectures, one file each, looked up by name in :data:`MODELS`.

Every model is an ``nn.Module`` mapping ``(N, C, *spatial)`` to logits
``(N, K, *output_spatial)`` and has a ``geometry`` attribute
(:class:`~lesionseg.models.geometry.ModelGeometry`).
"""

from lesionseg.models.geometry import ModelGeometry
from lesionseg.registry import Registry

MODELS: Registry = Registry("model")

__all__ = ["MODELS", "ModelGeometry"]

# Register the architectures (import after MODELS exists; each module registers itself).
from lesionseg.models import brainsegnet, deepmedic, dunet, edd, muscle, patch_cnn, unet  # noqa: E402, F401
