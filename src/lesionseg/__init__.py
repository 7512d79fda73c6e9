"""lesionseg: automatic brain-lesion segmentation in multi-modal 3D MRI.

Five published CNN methods (DeepMedic, Brain SegNet, the MSSEG 2016 cascade,
EDD Net + MUSCLE Net, D-UNet) composed from one shared pipeline:
data → preprocess → sampling → models → training → inference → post-processing → evaluation.
"""

__version__ = "0.1.0"

from lesionseg.errors import LesionsegError  # noqa: E402

__all__ = ["LesionsegError", "__version__"]
