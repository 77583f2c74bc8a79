"""Data: any folder of X-rays (or the built-in phantoms, or MedMNIST) → one uint8 tensor, decoded once.

The training loop never touches files: ``load_dataset`` returns an :class:`ImageSet` whose ``images`` are a
``(N, 1, S, S)`` uint8 tensor (move it to the device whole, draw batches by index). Loading a folder

* reads PNG/JPEG/BMP/TIFF in any Pillow mode and DICOM (pydicom), always to one grayscale channel;
* makes every image square at ``size`` px: ``crop="center"`` (resize the shorter side, centre-crop — the
  default), ``"pad"`` (letterbox with black) or ``"stretch"``;
* takes the class from the first sub-folder (``normal/``, ``pneumonia/``);
* decodes fast: JPEGs are decoded at reduced scale (``Image.draft``), resizing shrinks by integer factors
  first (``reducing_gap``), and files are decoded by a thread pool (Pillow releases the GIL);
* caches the decoded tensor under ``cxrlib.config.cache_dir()``, so the second load is a file read;
* stops at the first unreadable file naming it (``on_error="raise"``) or skips and counts (``"skip"``).

Paired data (Pix2Pix: anatomy mask → X-ray), :func:`load_pairs` or ``load_dataset(..., masks=True)``: the
images anywhere under the root as above, and ``masks/<structure>/<same stem>.png`` beside them (0/255, one
folder per structure, e.g. ``masks/lungs/cxr_00001.png``; ``<stem>_mask.png`` also matches) — the layout
``cxrlib phantom --masks`` writes. Montgomery's ``leftMask/`` + ``rightMask/`` become one ``lungs``
structure (their union); a flat folder of mask files is ``lungs``; a mask folder elsewhere is given with
``masks_dir`` (``--masks DIR``). Unpaired data (CycleGAN), :func:`load_unpaired`: two folders, one per domain.

Nothing here ever writes into a source folder.

Where things are, one job per module (import from ``cxrlib.data``; the modules are for reading):

* ``imageset``: :class:`ImageSet`, the decoded set, with ``describe``, ``subset`` and the stratified ``split``;
* ``dataset``: :func:`load_dataset`, the notebooks' one switch (phantoms, a folder, MedMNIST);
* ``decoding``: one file → grayscale pixels (:func:`read_image`, :func:`decode_square`, Pillow and DICOM);
* ``listing``: the files of a folder (:func:`list_images`), many files through a thread pool, :func:`is_inside`;
* ``folder``: :func:`load_images`, a folder decoded into (or read back from) the cache;
* ``cache``: the on-disk cache of decoded sets and :class:`RowReader`, the rows of a memory-mapped one;
* ``masks``: :func:`load_pairs` (anatomy masks and X-rays) and :func:`load_unpaired` (two domains);
* ``medmnist``: :func:`load_medmnist`, :func:`read_medmnist_npz`;
* ``tools``: :func:`inspect_folder` and :func:`prepare_folder` (``python -m cxrlib inspect`` / ``prepare``).
"""

from cxrlib.data.cache import CACHE_FORMAT, RowReader, use_memmap
from cxrlib.data.dataset import _take as _take
from cxrlib.data.dataset import load_dataset
from cxrlib.data.decoding import CROP_MODES, DICOM_EXTS, PIL_EXTS, decode_square, read_image
from cxrlib.data.decoding import _open_any as _open_any
from cxrlib.data.decoding import _to_gray as _to_gray
from cxrlib.data.decoding import _to_uint8 as _to_uint8
from cxrlib.data.folder import load_images
from cxrlib.data.imageset import ImageSet
from cxrlib.data.listing import IGNORE_DIRS, default_workers, is_inside, list_images
from cxrlib.data.listing import _map_files as _map_files
from cxrlib.data.listing import _warn_skipped as _warn_skipped
from cxrlib.data.masks import MASK_FORMAT, load_pairs, load_unpaired
from cxrlib.data.medmnist import MEDMNIST_CLASSES, MEDMNIST_SIZES, load_medmnist, read_medmnist_npz
from cxrlib.data.tools import InspectReport, check_separate, inspect_folder, prepare_folder
from cxrlib.data.tools import _Writer as _Writer

__all__ = [
    "CACHE_FORMAT", "CROP_MODES", "DICOM_EXTS", "IGNORE_DIRS", "MASK_FORMAT", "MEDMNIST_CLASSES", "MEDMNIST_SIZES",
    "PIL_EXTS", "ImageSet", "InspectReport", "RowReader", "check_separate", "decode_square", "default_workers",
    "inspect_folder", "is_inside", "list_images", "load_dataset", "load_images", "load_medmnist", "load_pairs",
    "load_unpaired", "prepare_folder", "read_image", "read_medmnist_npz", "use_memmap",
]  # fmt: skip
