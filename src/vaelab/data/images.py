"""A folder of PNG / JPEG images, flat or one sub-folder per class (read with Pillow)."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from vaelab.data.core import DataSplits, _random_splits
from vaelab.errors import DataError

logger = logging.getLogger("vaelab.data")  # one logger for every data source

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif")
_NAMED = 5  # skip_bad_images: the warning names this many of the skipped files
_GREY_MODES = ("1", "L", "LA", "I", "F")  # and "I;16*"; Pillow's single-channel modes (LA: plus alpha)


def _decode_image(im: Any) -> np.ndarray:
    """Pixels of an open PIL image: (H, W) uint8 for a greyscale image, (H, W, 3) uint8 for colour.

    Greyscale: modes 1, L, LA (alpha dropped), I, I;16 and F (converted by Pillow's "L" conversion),
    and palette images (P, PA) whose colours in use all have R == G == B. Colour: RGB, RGBA and
    RGBX (alpha dropped, not composited over a background), CMYK, YCbCr, LAB, HSV and palette
    images with any non-grey colour in use (converted to RGB through the palette).
    """
    mode = im.mode
    if mode in ("P", "PA"):
        rgb = np.asarray(im.convert("RGBA"), dtype=np.uint8)[..., :3]  # via RGBA: keeps Pillow quiet about tRNS
        if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 1] == rgb[..., 2]).all():
            return np.ascontiguousarray(rgb[..., 0])
        return np.ascontiguousarray(rgb)
    if mode in _GREY_MODES or mode.startswith("I;16"):
        return np.asarray(im.convert("L"), dtype=np.uint8)
    return np.asarray(im.convert("RGB"), dtype=np.uint8)


def _square_resize(im: Any, size: int) -> Any:
    """The centred square of side min(W, H), resized to size x size with Lanczos filtering."""
    from PIL import Image

    w, h = im.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    return im.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.LANCZOS)


def load_image_folder(
    folder: Path, image_size: int | None = None, val_size: int | None = None, skip_bad_images: bool = False
) -> DataSplits:
    """PNG/JPEG images of one size, either flat or one sub-folder per class (ImageFolder layout).

    Colour is kept: a folder of greyscale images gives (1, H, W) images, a folder of colour images
    (3, H, W). RGBA images lose their alpha channel (dropped, not composited); palette images count
    as grey when every colour they use is grey (see `_decode_image`). A folder that mixes greyscale
    and colour images gives (3, H, W): the grey ones are copied into all three channels, and a
    warning on the "vaelab.data" logger says how many were converted. Without `image_size` all
    images must have one size; with it, each is centre-cropped to a square and resized to
    image_size x image_size (Pillow's Lanczos filter; CelebA's img_align_celeba at 64 is the usual
    CelebA-64). A file that cannot be decoded is named in the error; with `skip_bad_images` it is
    left out instead, and one warning on the "vaelab.data" logger counts them and names the first
    few. A fixed permutation (seed 0) splits the images 80/10/10, or with `val_size` validation
    images and 10% test.
    """
    from PIL import Image, UnidentifiedImageError

    subdirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subdirs:
        groups = [
            (d.name, sorted(f for f in d.iterdir() if f.is_file() and not f.name.startswith("."))) for d in subdirs
        ]
    else:
        groups = [("", sorted(f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")))]
    images: list[np.ndarray] = []
    labels: list[int] = []
    names: list[str] = []
    grey: list[Path] = []
    bad: list[Path] = []
    for label, (name, files) in enumerate(groups):
        names.append(name)
        for f in files:
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                raise DataError(
                    f"{f}: not an image file (expected {', '.join(IMAGE_SUFFIXES)}); remove it from {folder}"
                )
            try:
                with Image.open(f) as im:
                    im.load()
                    arr = _decode_image(im if image_size is None else _square_resize(im, image_size))
            # what Pillow raises on a truncated or garbled file (SyntaxError: "broken PNG file")
            except (UnidentifiedImageError, OSError, SyntaxError, EOFError) as e:
                if skip_bad_images:
                    bad.append(f)
                    continue
                raise DataError(
                    f"{f}: cannot decode the image ({e}); remove it, or pass --data.skip_bad_images=true "
                    f"to leave out every file that cannot be decoded"
                ) from e
            if images and arr.shape[:2] != images[0].shape[:2]:
                raise DataError(
                    f"{f}: size {arr.shape[1]}x{arr.shape[0]} differs from {images[0].shape[1]}x{images[0].shape[0]}"
                    f" of the first image; all images must have one size, or pass --image-size N to centre-crop "
                    f"and resize them"
                )
            if arr.ndim == 2:
                grey.append(f)
            images.append(arr)
            labels.append(label)
    if bad:
        logger.warning(
            "%s: skipped %d image file(s) that cannot be decoded (skip_bad_images): %s%s",
            folder,
            len(bad),
            ", ".join(str(b.relative_to(folder)) for b in bad[:_NAMED]),
            f" and {len(bad) - _NAMED} more" if len(bad) > _NAMED else "",
        )
    if not images:
        if bad:
            raise DataError(f"{folder}: none of its {len(bad)} image files can be decoded; replace them")
        raise DataError(f"{folder}: no images found; put PNG files in it (or one sub-folder per class)")
    if len(grey) == len(images):
        x = np.stack(images)[:, None]
    else:
        if grey:
            logger.warning(
                "%s: %d of %d images are greyscale (first: %s) and the rest colour; converted %s to RGB "
                "(grey value copied to all three channels), so the data set is 3-channel",
                folder,
                len(grey),
                len(images),
                grey[0].relative_to(folder),
                "it" if len(grey) == 1 else f"the {len(grey)} greyscale images",
            )
        x = np.stack([np.repeat(a[..., None], 3, axis=-1) if a.ndim == 2 else a for a in images])
        x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    y = np.asarray(labels, dtype=np.int64) if subdirs else None
    splits = _random_splits(folder.name, x, y, val_size=val_size, source=str(folder))
    return replace(splits, class_names=tuple(names) if subdirs else ())
