"""``dscnet predict``: segment your own images and write VOC palette PNGs.

Inputs are files, folders (their images, not recursive) or glob patterns (``**`` recurses).
Each image is read with :func:`dscnet.data.readers.read_image` (EXIF orientation applied,
grayscale / RGBA / 16-bit converted to 8-bit RGB), segmented at any size and written as
``<stem>.png`` with exactly the size of the (EXIF-transposed) input. Optional outputs:
``<stem>_overlay.jpg`` (mask blended over the image) and ``<stem>_cam_<class>.png`` heat maps.

Segmentation never reads tags. The CAM heat maps are drawn for the classes the model itself
finds in the image (image score ``sigmoid(cls_logit) > 0.5``), since a user's image has no tags.

Any image size is handled: dscnet's backbones accept any height and width (padding
convolutions, ViT patch embedding with ``dynamic_img_pad``) and ``model.segment`` returns
logits at the input size, so images are fed as they are and the mask matches them pixel for
pixel, exactly as ``dscnet eval`` scores them. For a model that needs sizes divisible by its
stride, ``size_divisor`` zero-pads every pass (bottom/right) and crops the output back.
Images larger than ``max_side`` (default 1024 px on the longer side) are segmented at that
size and the probabilities resized back, one class at a time, so a 24-Mpixel photo needs
neither a ViT over 90,000 tokens nor a ``[K, H, W]`` array at full size.

A file that cannot be read (corrupt, not an image, larger than ``max_pixels``, a broken link)
is reported in :attr:`PredictSummary.failed` and in ``index.csv``, and skipped; the others are
still processed. The output folder is checked before any work
(:func:`~dscnet.inference.predict_inputs.check_output_folder`): never an input folder, never
the outputs of an earlier run as inputs. A write that fails (full disk, permissions) stops
the run with an :class:`~dscnet.errors.OutputError` naming the file and the reason;
``index.csv`` still lists what was written, the failure and the inputs left unprocessed.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from dscnet.cam.cams import cam_maps
from dscnet.data.transforms import group_by_size
from dscnet.errors import ConfigError, DscnetError, OutputError
from dscnet.inference.crf import CrfParams, dense_crf, require_crf
from dscnet.inference.multiscale import segment_probs
from dscnet.inference.predict_inputs import (
    INDEX_HEADER,
    INDEX_NAME,
    check_output_folder,
    expand_inputs,
    output_stems,
)
from dscnet.utils.device import resolve_device
from dscnet.utils.io import atomic_write, writing

# Image score above which a class counts as present when choosing CAMs to draw.
CAM_SCORE_THRESHOLD = 0.5


@dataclass
class PredictSummary:
    """What :func:`predict_paths` did.

    Attributes:
        ok: number of images segmented and written.
        failed: ``(input, message)`` for every input that was skipped.
        outputs: ``(input image, written mask path)`` for every image written.
    """

    ok: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    outputs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def all_ok(self) -> bool:
        """True when nothing failed (the CLI exits non-zero otherwise)."""
        return not self.failed


# ----------------------------------------------------------------------------- model


def _to_tensor(images: Sequence[np.ndarray], mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    x = torch.from_numpy(np.stack(images)).to(mean.device).permute(0, 3, 1, 2)
    return (x.to(mean.dtype) / 255.0 - mean) / std


def image_scores(model: nn.Module, images: torch.Tensor, size_divisor: int = 1) -> torch.Tensor:
    """``sigmoid(cls_logits)`` ``[B, C]``: the model's own belief that each class is present."""
    h, w = images.shape[-2:]
    if size_divisor > 1:
        images = F.pad(images, (0, (-w) % size_divisor, 0, (-h) % size_divisor))
    with torch.no_grad():
        if hasattr(model, "classify"):
            _, cls_logits = model.classify(images)
        else:
            cls_logits = model(images)["cls_logits"]
    return torch.sigmoid(cls_logits)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "class"


def _save_rgb(array: np.ndarray, path: Path) -> None:
    image = Image.fromarray(np.asarray(array, dtype=np.uint8))
    if path.suffix.lower() in (".jpg", ".jpeg"):
        atomic_write(path, lambda tmp: image.save(tmp, format="JPEG", quality=90))
    else:
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))


@dataclass
class _Options:
    out_dir: Path
    class_names: list[str]
    scales: tuple[float, ...]
    flip: bool
    crf: CrfParams | None
    save_overlay: bool
    save_cams: bool
    max_cams: int
    size_divisor: int
    max_side: int | None


def _limit_side(x: torch.Tensor, max_side: int | None) -> torch.Tensor:
    """Downscale (antialiased) so the longer side is at most ``max_side``; else unchanged."""
    h, w = x.shape[-2:]
    if not max_side or max(h, w) <= max_side:
        return x
    s = max_side / max(h, w)
    size = (max(1, round(h * s)), max(1, round(w * s)))
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)


def upsampled_argmax(probs: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``argmax`` over K of ``probs`` bilinearly resized to ``size``, as uint8 ``[B, H, W]``.

    Resizes one channel at a time with a running maximum, so memory is a few ``[B, H, W]``
    maps instead of ``[B, K, H, W]`` (a 24-Mpixel photo with 81 classes would need 8 GB).
    """
    if tuple(probs.shape[-2:]) == tuple(size):
        return probs.argmax(1).to(torch.uint8)
    best = best_idx = None
    for k in range(probs.shape[1]):
        up = F.interpolate(probs[:, k : k + 1], size=size, mode="bilinear", align_corners=False)[:, 0]
        if best is None:
            best, best_idx = up, torch.zeros(up.shape, dtype=torch.uint8, device=up.device)
        else:
            better = up > best  # strict: ties keep the lower class id, as argmax does
            best = torch.where(better, up, best)
            best_idx[better] = k
    assert best_idx is not None
    return best_idx


def _resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if image.shape[:2] == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize((size[1], size[0]), Image.Resampling.BILINEAR))


def _predict_group(
    model: nn.Module,
    images: list[np.ndarray],
    mean: torch.Tensor,
    std: torch.Tensor,
    opts: _Options,
) -> tuple[list[np.ndarray], list[list[tuple[str, np.ndarray]]]]:
    """Masks (uint8 ``[H, W]``, input size) and per-image ``(class, CAM)`` for same-size images."""
    full = images[0].shape[:2]
    x = _limit_side(_to_tensor(images, mean, std), opts.max_side)
    work = tuple(x.shape[-2:])
    probs = segment_probs(model, x, opts.scales, opts.flip, size_divisor=opts.size_divisor)
    if probs.shape[1] != len(opts.class_names):
        raise ConfigError(
            f"{len(opts.class_names)} class names given but the model predicts "
            f"{probs.shape[1]} classes (background included)"
        )
    if opts.crf is not None:
        # At the working resolution: the CRF's cost grows with the pixel count.
        params = asdict(opts.crf)
        refined = [
            dense_crf(_resize_rgb(im, work), p, **params)
            for im, p in zip(images, probs.float().cpu().numpy())
        ]
        probs = torch.from_numpy(np.stack(refined))
    masks = list(upsampled_argmax(probs, full).cpu().numpy())

    cams: list[list[tuple[str, np.ndarray]]] = [[] for _ in images]
    if opts.save_cams:
        scores = image_scores(model, x, opts.size_divisor).float().cpu()
        present = scores > CAM_SCORE_THRESHOLD
        if bool(present.any()):
            # Left at the working resolution: cam_heatmap resizes them to the image.
            maps = cam_maps(model, x, None, opts.scales, opts.flip, size_divisor=opts.size_divisor)
            for i in range(len(images)):
                ranked = [c for c in scores[i].argsort(descending=True).tolist() if present[i, c]]
                for c in ranked[: opts.max_cams]:
                    name = opts.class_names[c + 1]  # CAM channel c = foreground class c + 1
                    cams[i].append((name, maps[i, c].float().cpu().numpy()))
    return masks, cams


def _write_outputs(
    stem: str, image: np.ndarray, mask: np.ndarray, cams: list[tuple[str, np.ndarray]], opts: _Options
) -> Path:
    from dscnet.data.palette import save_palette_png
    from dscnet.visualize.overlay import cam_heatmap, overlay_mask

    mask_path = opts.out_dir / f"{stem}.png"
    save_palette_png(mask, mask_path)
    if opts.save_overlay:
        _save_rgb(overlay_mask(image, mask), opts.out_dir / f"{stem}_overlay.jpg")
    for name, cam in cams:
        _save_rgb(cam_heatmap(image, cam), opts.out_dir / f"{stem}_cam_{_safe_name(name)}.png")
    return mask_path


def _progress(enabled: bool) -> Any:
    from dscnet.utils.progress import make_progress

    return make_progress(disable=not enabled)


def predict_paths(
    model: nn.Module,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    mean: Sequence[float],
    std: Sequence[float],
    class_names: Sequence[str],
    scales: Sequence[float] = (1.0,),
    flip: bool = False,
    crf: CrfParams | Mapping[str, Any] | None = None,
    device: str | torch.device | None = None,
    save_overlay: bool = True,
    save_cams: bool = False,
    batch_size: int = 1,
    progress: bool = True,
    max_pixels: int | None = None,
    size_divisor: int = 1,
    max_cams: int = 5,
    max_side: int | None = 1024,
) -> PredictSummary:
    """Segment images and write ``<stem>.png`` VOC palette masks (same size as each input).

    Args:
        model: a model with ``segment`` (and ``cam`` + ``classify`` for ``save_cams``).
        inputs: image files, folders and glob patterns.
        out_dir: created if needed; also receives ``index.csv`` (input -> mask, or the error).
            Must not be an input folder, lie inside one or hold input images (OutputError).
        mean, std: the normalisation the model was trained with (``data.mean/std``).
        class_names: background first, length C+1 (names the CAM files).
        scales, flip: test-time augmentation (see :func:`multiscale_predict`).
        crf: dense-CRF parameters (``eval.crf``) to refine the masks, or None.
        device: ``"cpu"``, ``"cuda"``, ``"auto"``...; None keeps the model's device.
        save_overlay: also write ``<stem>_overlay.jpg``.
        save_cams: also write ``<stem>_cam_<class>.png`` heat maps for up to ``max_cams``
            classes whose image score exceeds 0.5 (no tags are read).
        batch_size: images per forward pass (consecutive images of equal size are batched).
        progress: show a rich progress bar and print skipped files.
        max_pixels: refuse images with more pixels, from their header, before decoding
            (default :data:`dscnet.data.readers.DEFAULT_MAX_PIXELS`, 40 Mpixel).
        size_divisor: pad each pass to a multiple of this (1 = never pad, the default).
        max_cams: at most this many CAM heat maps per image (highest image scores first).
        max_side: images whose longer side exceeds this are downscaled (antialiased) for the
            network and the CRF; the probabilities are resized back, so the mask still has
            the input's size. Bounds time and memory on photos (None = never downscale).

    Returns:
        A :class:`PredictSummary`; ``summary.failed`` lists the skipped inputs with reasons.
    """
    if crf is not None:
        require_crf()  # fail before the first image, not after a long run
    crf_params = CrfParams.from_any(crf) if crf is not None else None
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    # Before any work: never write over or among the inputs, never read earlier outputs.
    paths, problems = expand_inputs(inputs)
    out = check_output_folder(out_dir, inputs, paths)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)

    if device is not None:
        model.to(resolve_device(str(device)))
    model.eval()
    param = next(model.parameters(), None)
    dev = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    mean_t = torch.tensor(list(mean), device=dev, dtype=dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(list(std), device=dev, dtype=dtype).view(1, 3, 1, 1)

    opts = _Options(
        out_dir=out,
        class_names=list(class_names),
        scales=tuple(float(s) for s in scales),
        flip=bool(flip),
        crf=crf_params,
        save_overlay=save_overlay,
        save_cams=save_cams,
        max_cams=max_cams,
        size_divisor=max(1, int(size_divisor)),
        max_side=int(max_side) if max_side else None,
    )
    summary = PredictSummary(failed=list(problems))
    jobs = list(zip(paths, output_stems(paths)))
    try:
        _run_jobs(model, jobs, problems, summary, opts, mean_t, std_t, batch_size, progress, max_pixels)
    except OutputError as exc:
        # A full disk or a lost folder will not heal for the next image: stop, but leave an
        # index.csv that says what was written, what failed and what was not processed.
        done = {src for src, _ in summary.outputs} | {src for src, _ in summary.failed}
        summary.failed += [
            (str(p), f"{p}: not processed (the run stopped: {exc})") for p, _ in jobs if str(p) not in done
        ]
        try:
            _write_index(out / INDEX_NAME, summary)
        except OutputError:
            pass  # the first error is the one to report
        raise
    _write_index(out / INDEX_NAME, summary)
    return summary


def _run_jobs(
    model: nn.Module,
    jobs: list[tuple[Path, str]],
    problems: list[tuple[str, str]],
    summary: PredictSummary,
    opts: _Options,
    mean_t: torch.Tensor,
    std_t: torch.Tensor,
    batch_size: int,
    progress: bool,
    max_pixels: int | None,
) -> None:
    """The read -> segment -> write loop of :func:`predict_paths`, filling ``summary``."""
    from rich.markup import escape

    from dscnet.data.readers import read_image  # local: keeps `import dscnet.inference` light

    with _progress(progress) as bar:
        def say(message: str) -> None:
            # escape(): file names may contain [brackets] that rich would read as markup.
            if progress:
                bar.console.print(f"[yellow]skipped[/] {escape(message)}", highlight=False, soft_wrap=True)

        for _, message in problems:
            say(message)
        task = bar.add_task("predict", total=len(jobs), info="")

        def fail(path: Path, message: str) -> None:
            summary.failed.append((str(path), message))
            say(message)

        for start in range(0, len(jobs), batch_size):
            loaded = []
            for path, stem in jobs[start : start + batch_size]:
                bar.update(task, info=path.name)
                try:
                    loaded.append((path, stem, read_image(path, max_pixels)))
                except DscnetError as exc:
                    fail(path, str(exc) if str(path) in str(exc) else f"{path}: {exc}")
            for run in group_by_size(loaded, lambda item: item[2].shape):
                images = [im for _, _, im in run]
                try:
                    masks, cams = _predict_group(model, images, mean_t, std_t, opts)
                except torch.OutOfMemoryError:
                    for path, _, im in run:
                        fail(path, f"{path}: out of memory at {im.shape[1]}x{im.shape[0]} px")
                    continue
                for (path, stem, image), mask, cam in zip(run, masks, cams):
                    try:
                        mask_path = _write_outputs(stem, image, mask, cam, opts)
                    except OutputError as exc:
                        summary.failed.append((str(path), str(exc)))
                        raise
                    summary.ok += 1
                    summary.outputs.append((str(path), str(mask_path)))
            bar.advance(task, len(jobs[start : start + batch_size]))
        bar.update(task, name="done")


def _write_index(path: Path, summary: PredictSummary) -> None:
    """``index.csv``: one row per input, its mask or the reason it has none (atomic)."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(INDEX_HEADER)
            for src, mask in summary.outputs:
                writer.writerow([src, Path(mask).name, ""])
            for src, message in summary.failed:
                writer.writerow([src, "", message])

    atomic_write(path, write)


def predict_from_checkpoint(
    checkpoint: str | Path,
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    device: str = "auto",
    scales: Sequence[float] | None = None,
    flip: bool | None = None,
    crf: bool | CrfParams | Mapping[str, Any] = False,
    **kwargs: Any,
) -> PredictSummary:
    """:func:`predict_paths` with the model, normalisation, classes and defaults of a checkpoint.

    ``scales``/``flip`` default to the checkpoint config's ``eval.scales``/``eval.flip``;
    ``crf=True`` uses its ``eval.crf`` parameters.
    """
    from dscnet.models.loading import load_model_from_checkpoint

    if crf is not False and crf is not None:
        require_crf()
    model, cfg, class_names = load_model_from_checkpoint(checkpoint, device=resolve_device(device))
    crf_params = None
    if crf is True:
        crf_params = CrfParams.from_any(cfg.eval.crf)
    elif crf not in (False, None):
        crf_params = CrfParams.from_any(crf)  # type: ignore[arg-type]
    return predict_paths(
        model,
        inputs,
        out_dir,
        mean=list(cfg.data.mean),
        std=list(cfg.data.std),
        class_names=class_names,
        scales=list(cfg.eval.scales) if scales is None else scales,
        flip=cfg.eval.flip if flip is None else flip,
        crf=crf_params,
        **kwargs,
    )
