"""A dataset as the toolkit holds it, the one error a bad one ends in, and the validation every
reader applies to the images and labels it found.

Images: float (any width) or uint8, [N, H, W], [N, C, H, W] or [N, H, W, C] with N >= 1 and
no empty axis; no NaN or Inf; float images inside the bounds (default [0, 1]). uint8 images
must use the 0..255 scale (``UINT8_MIN_PEAK``, ``UINT8_LARGE_SET``, ``UINT8_LARGE_PEAK``).
Labels: an integer dtype, 1-D, one per image, in [0, num_classes) when that is known. Both
become float32 NCHW in [0, 1] and int64.

Beyond :class:`Dataset`, :class:`DatasetError` and :func:`check_dataset`, this module serves
the dataset readers beside it.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

UINT8_MIN_PEAK = 64
UINT8_LARGE_SET = 1000
UINT8_LARGE_PEAK = 200


MAX_MESSAGE_PART = 160


CLASS_NAMES = {
    "digits": [str(i) for i in range(10)],
    "mnist": [str(i) for i in range(10)],
    "fashion-mnist": [
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ],
    "cifar10": [
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ],
}


class DatasetError(ValueError):
    """A dataset that cannot be found, read or used; the message is one line.

    It names the file (and the array), what was expected, what arrived and the fix.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))


@dataclass(frozen=True)
class Dataset:
    """Images and labels.

    Attributes:
        x: images, float32 [N, C, H, W] in [0, 1].
        y: labels, int64 [N].
        name: dataset name (or the file name for a generic file).
        split: ``train``, ``test`` or ``file``.
        source: where it was read from.
        classes: class names, when known.
    """

    x: Tensor
    y: Tensor
    name: str
    split: str
    source: str
    classes: tuple[str, ...] = ()

    def __len__(self) -> int:
        return int(self.y.shape[0])


def dataset_names() -> list[str]:
    """Names of the built-in datasets."""
    return sorted(CLASS_NAMES)


@dataclass(frozen=True)
class Expect:
    """What the caller knows about the data before reading it."""

    num_classes: int | None = None
    input_shape: tuple[int, ...] | None = None
    bounds: tuple[float, float] = (0.0, 1.0)


# --------------------------------------------------------------------------------- validation


def _layouts(shape: tuple[int, ...]) -> list[tuple[str, tuple[int, ...]]]:
    """The NCHW readings of an image array's shape, most likely first."""
    if len(shape) == 3:
        return [("[N, H, W]", (shape[0], 1, shape[1], shape[2]))]
    nchw = ("[N, C, H, W]", shape)
    nhwc = ("[N, H, W, C]", (shape[0], shape[3], shape[1], shape[2]))
    if shape[-1] in (1, 3) and shape[1] not in (1, 3):
        return [nhwc, nchw]
    return [nchw, nhwc]


def checked_images(array: np.ndarray, where: str, expect: Expect) -> Tensor:
    """Validate images as stored and convert them to float32 NCHW in [0, 1].

    Args:
        array: uint8 or float images, [N, H, W], [N, C, H, W] or [N, H, W, C].
        where: the file and array, for messages.
        expect: the input shape and bounds the caller needs, if known.

    Returns:
        float32 [N, C, H, W].

    Raises:
        DatasetError: on any problem, in one line.
    """
    if array.dtype != np.uint8 and not np.issubdtype(array.dtype, np.floating):
        raise DatasetError(
            f"{where}: expected uint8 (0..255) or float in [0, 1], got dtype {array.dtype}; "
            "save them as uint8 or float32"
        )
    if array.ndim not in (3, 4):
        raise DatasetError(
            f"{where}: expected [N, H, W], [N, C, H, W] or [N, H, W, C], got shape "
            f"{tuple(array.shape)}; reshape before saving"
        )
    if array.shape[0] < 1:
        raise DatasetError(f"{where}: the set is empty (shape {tuple(array.shape)}); save N >= 1")
    if 0 in array.shape:
        raise DatasetError(
            f"{where}: an image axis is empty (shape {tuple(array.shape)}); save whole images"
        )
    layouts = _layouts(tuple(array.shape))
    chosen = layouts[0]
    if expect.input_shape is not None:
        fits = [layout for layout in layouts if layout[1][1:] == tuple(expect.input_shape)]
        if not fits:
            seen = " or ".join(f"{name} {tuple(s[1:])}" for name, s in layouts)
            raise DatasetError(
                f"{where}: the model expects images of shape {tuple(expect.input_shape)} "
                f"(C, H, W), got shape {tuple(array.shape)} (read as {seen}); pass the "
                "dataset the model was trained on"
            )
        chosen = fits[0]
    low, high = expect.bounds
    if array.dtype == np.uint8:
        peak = int(array.max())
        count = array.shape[0]
        if peak < UINT8_MIN_PEAK or (count >= UINT8_LARGE_SET and peak < UINT8_LARGE_PEAK):
            need = UINT8_MIN_PEAK if peak < UINT8_MIN_PEAK else UINT8_LARGE_PEAK
            raise DatasetError(
                f"{where}: uint8 values lie in [{int(array.min())}, {peak}] over {count} images; "
                f"uint8 images are divided by 255, so a set must reach {need} somewhere "
                f"({UINT8_MIN_PEAK} for any set, {UINT8_LARGE_PEAK} from {UINT8_LARGE_SET} "
                f"images on); rescale: save x / {max(peak, 1)} as float32 in [0, 1], or "
                f"x * 255 // {max(peak, 1)} as uint8"
            )
        images = torch.from_numpy(np.array(array, copy=True)).float().div_(255.0)
    else:
        finite = np.isfinite(array)
        if not finite.all():
            bad = np.argwhere(~finite)
            first = tuple(int(i) for i in bad[0])
            kinds = "NaN" if np.isnan(array).any() else "Inf"
            if kinds == "NaN" and np.isinf(array).any():
                kinds = "NaN and Inf"
            raise DatasetError(
                f"{where}: {len(bad)} pixels are {kinds}, the first at index {list(first)}; "
                "replace or drop those images"
            )
        smallest, largest = float(array.min()), float(array.max())
        if smallest < low or largest > high:
            raise DatasetError(
                f"{where}: float images must lie in the bounds [{low:g}, {high:g}], got range "
                f"[{smallest:.6g}, {largest:.6g}]; rescale to [{low:g}, {high:g}] "
                "or save uint8 0..255"
            )
        images = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if images.dim() == 3:
        images = images.unsqueeze(1)
    elif chosen[0] == "[N, H, W, C]":
        images = images.permute(0, 3, 1, 2)
    images = images.contiguous()
    if images.numel() and (float(images.min()) < low or float(images.max()) > high):
        raise DatasetError(
            f"{where}: values after scaling lie in [{float(images.min()):.6g}, "
            f"{float(images.max()):.6g}], outside the bounds [{low:g}, {high:g}]; "
            "save float images inside the bounds"
        )
    return images


def checked_labels(array: np.ndarray, count: int, where: str, expect: Expect) -> Tensor:
    """Validate labels as stored and convert them to int64 [N].

    Args:
        array: integer labels [N].
        count: the number of images, N.
        where: the file and array, for messages.
        expect: the number of classes, if known.

    Returns:
        int64 [N].

    Raises:
        DatasetError: on any problem, in one line.
    """
    if array.dtype == np.bool_ or not np.issubdtype(array.dtype, np.integer):
        fix = "save integer class indices (int64)"
        if np.issubdtype(array.dtype, np.floating) and array.size:
            with np.errstate(invalid="ignore"):
                whole = bool(np.all(np.isfinite(array)) and np.all(array == np.round(array)))
            fix = (
                "all are whole numbers: convert with y.astype(np.int64) (numpy) or y.long() "
                "(torch) before saving"
                if whole
                else "they are not all whole numbers, so they are not class indices"
            )
        raise DatasetError(f"{where}: expected an integer dtype, got {array.dtype}; {fix}")
    if array.ndim != 1:
        raise DatasetError(
            f"{where}: expected one label per image, shape [N], got shape {tuple(array.shape)}; "
            "save y.reshape(-1)"
        )
    if array.shape[0] != count:
        raise DatasetError(
            f"{where}: {count} images but {array.shape[0]} labels; save one label per image"
        )
    if array.size == 0:
        return torch.zeros(0, dtype=torch.int64)
    smallest, largest = int(array.min()), int(array.max())
    limit = expect.num_classes
    if smallest < 0 or largest > np.iinfo(np.int64).max or (limit is not None and largest >= limit):
        expected = f"[0, {limit - 1}] ({limit} classes)" if limit is not None else ">= 0"
        raise DatasetError(
            f"{where}: expected class indices {expected}, got range [{smallest}, {largest}]; "
            "give the dataset the model was trained on, or relabel to 0..num_classes-1"
        )
    return torch.from_numpy(array.astype(np.int64))


def checked_pair(
    images: np.ndarray, labels: np.ndarray, origin: str, expect: Expect
) -> tuple[Tensor, Tensor]:
    x = checked_images(images, f"{origin} (images)", expect)
    return x, checked_labels(labels, int(x.shape[0]), f"{origin} (labels)", expect)


def check_dataset(
    dataset: Dataset,
    num_classes: int | None = None,
    input_shape: Sequence[int] | None = None,
    bounds: tuple[float, float] | None = None,
) -> Dataset:
    """Check a loaded dataset against what a model needs, when that is known only later.

    Args:
        dataset: a loaded dataset (x float32 [N, C, H, W], y int64 [N]).
        num_classes: labels must lie in [0, num_classes).
        input_shape: the model's (C, H, W).
        bounds: the model's input range (LOW, HIGH).

    Returns:
        ``dataset`` unchanged.

    Raises:
        DatasetError: one line naming ``dataset.source``.
    """
    expect = make_expect(num_classes, input_shape, bounds)
    if expect.input_shape is not None and tuple(dataset.x.shape[1:]) != expect.input_shape:
        raise DatasetError(
            f"{dataset.source} (images): the model expects images of shape {expect.input_shape} "
            f"(C, H, W), got {tuple(dataset.x.shape[1:])}; pass the dataset the model was "
            "trained on"
        )
    checked_labels(dataset.y.numpy(), len(dataset), f"{dataset.source} (labels)", expect)
    low, high = expect.bounds
    if len(dataset) and (float(dataset.x.min()) < low or float(dataset.x.max()) > high):
        raise DatasetError(
            f"{dataset.source} (images): values lie in [{float(dataset.x.min()):.6g}, "
            f"{float(dataset.x.max()):.6g}], outside the model's bounds [{low:g}, {high:g}]; "
            "pass data in the model's input range"
        )
    return dataset


def make_expect(
    num_classes: int | None,
    input_shape: Sequence[int] | None,
    bounds: tuple[float, float] | None,
) -> Expect:
    if num_classes is not None and (
        isinstance(num_classes, bool)
        or not isinstance(num_classes, (int, np.integer))
        or num_classes < 1
    ):
        raise DatasetError(f"num_classes must be a positive integer, got {num_classes!r}")
    try:
        shape = None if input_shape is None else tuple(operator.index(s) for s in input_shape)
    except TypeError:
        raise DatasetError(
            f"input_shape must be three positive integers (C, H, W), got {input_shape!r}"
        ) from None
    if shape is not None and (len(shape) != 3 or min(shape) < 1):
        raise DatasetError(f"input_shape must be three positive sizes (C, H, W), got {shape}")
    try:
        chosen = (0.0, 1.0) if bounds is None else (float(bounds[0]), float(bounds[1]))
    except (TypeError, ValueError, IndexError):
        raise DatasetError(f"bounds must be two numbers (LOW, HIGH), got {bounds!r}") from None
    if not chosen[0] < chosen[1]:
        raise DatasetError(f"bounds must satisfy LOW < HIGH, got {bounds}")
    return Expect(None if num_classes is None else int(num_classes), shape, chosen)
