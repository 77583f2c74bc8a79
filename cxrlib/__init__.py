"""cxrlib — the small PyTorch library under the cxr-gan course.

One module per concept: ``phantom`` (procedural chest radiographs), ``data`` (load, cache, split, DICOM,
MedMNIST), ``augment`` (the original project's offline augmentation, DiffAugment/ADA), ``models``, ``losses``,
``train``, ``metrics``, ``viz``, ``widgets``, ``exercises``, ``config`` and ``cli`` (``python -m cxrlib ...``);
small shared helpers: ``images`` (image conversions) and ``files`` (atomic writes).
Importing the package is cheap; import the module you need.
"""

from cxrlib.errors import CxrError

__version__ = "0.1.0"  # the one place the version is written: pyproject.toml reads it from here (dynamic)
__all__ = ["CxrError", "__version__"]
