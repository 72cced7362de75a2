"""Inference speed: single- vs multi-scale predict, and ONNX Runtime vs PyTorch, on CPU.

Measures, for (a) a trained checkpoint or the demo model (``synth_cpu`` config, random
weights) and (b) ViT-B/16 at 512 px (random weights; no download):

- ``segment_probs`` images/s at scale 1.0 and at ``eval.ms_scales`` + flip (the model only);
- end-to-end ``predict_paths`` images/s (read PNG, predict, write palette PNG) for (a);
- ONNX Runtime vs PyTorch images/s on the exported segmentation graph (single scale).

Usage::

    python benchmarks/bench_predict.py                         # demo model + ViT-B/16
    python benchmarks/bench_predict.py --checkpoint runs/x/ckpt.pt --size 500
    python benchmarks/bench_predict.py --skip-vit --threads 2

Run it on an idle machine: on a shared CPU, torch's OpenMP threads stall on each other
(``--threads 1`` is then faster and steadier). ViT-B/16 at 512 px is slow on a laptop CPU (seconds per multi-scale image): it runs
``--vit-iters`` images (default 2) after one warm-up. Results are printed as a Markdown table
(paste into docs/BENCHMARKS.md) and, with ``--json``, written to a file.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from dscnet.config import load_config  # noqa: E402
from dscnet.inference.multiscale import segment_probs  # noqa: E402


def _rate(fn: Callable[[], None], iters: int, images_per_call: int, warmup: int = 1) -> float:
    """Images per second of ``fn`` after ``warmup`` untimed calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return iters * images_per_call / (time.perf_counter() - start)


def _build(args: argparse.Namespace, overrides: list[str]) -> tuple[torch.nn.Module, object, list[str]]:
    if args.checkpoint and not overrides:
        from dscnet.engine.checkpoint import load_model_from_checkpoint

        return load_model_from_checkpoint(args.checkpoint, device="cpu")
    from dscnet.models.dscnet import build_model

    cfg = load_config(args.config, ["model.pretrained=null", *overrides])
    num_classes = int(cfg.data.synth.num_classes) if cfg.data.type == "synth" else 20
    torch.manual_seed(0)
    model = build_model(cfg, num_classes).eval()
    return model, cfg, ["background"] + [f"class{i}" for i in range(1, num_classes + 1)]


def _onnx_rates(model: torch.nn.Module, size: int, iters: int) -> dict[str, float]:
    from dscnet.inference.export import export_onnx

    try:
        import onnxruntime as ort
    except ImportError:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        # Checked at a smaller, non-square size (dynamic axes) to keep ViT-B/16 quick.
        check = (1, 3, size * 3 // 4 + 3, size // 2 + 5)
        path = export_onnx(model, Path(tmp) / "m.onnx", example_size=(1, 3, size, size), check_size=check)
        export_s = time.perf_counter() - t0
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        x = torch.randn(1, 3, size, size)
        feed = {session.get_inputs()[0].name: x.numpy()}
        ort_rate = _rate(lambda: session.run(None, feed), iters, 1)
    with torch.inference_mode():
        torch_rate = _rate(lambda: model.segment(x), iters, 1)
    return {"onnx_export_s": export_s, "onnxruntime_img_s": ort_rate, "pytorch_segment_img_s": torch_rate}


def _predict_rate(model, cfg, names, size: int, n: int) -> float:
    from dscnet.inference.predict import predict_paths

    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        src.mkdir()
        for i in range(n + 1):
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(src / f"{i:03d}.png")
        kwargs = dict(mean=list(cfg.data.mean), std=list(cfg.data.std), class_names=names,
                      save_overlay=False, progress=False, device="cpu")
        predict_paths(model, [src / "000.png"], Path(tmp) / "warm", **kwargs)
        images = sorted(src.glob("*.png"))[1:]
        start = time.perf_counter()
        summary = predict_paths(model, images, Path(tmp) / "out", **kwargs)
        elapsed = time.perf_counter() - start
    assert summary.ok == n, summary.failed
    return n / elapsed


def bench_model(label: str, model, cfg, names, size: int, iters: int, ms_iters: int,
                onnx: bool, predict: bool) -> dict[str, object]:
    x = torch.randn(1, 3, size, size)
    ms = [float(s) for s in cfg.eval.ms_scales]
    with torch.inference_mode():
        single = _rate(lambda: segment_probs(model, x), iters, 1)
        multi = _rate(lambda: segment_probs(model, x, scales=ms, flip=True), ms_iters, 1)
    row: dict[str, object] = {
        "model": label,
        "backbone": str(cfg.model.backbone),
        "params_M": sum(p.numel() for p in model.parameters()) / 1e6,
        "size": size,
        "single_scale_img_s": single,
        "multi_scale_flip_img_s": multi,
        "ms_scales": ms,
    }
    if predict:
        row["predict_paths_img_s"] = _predict_rate(model, cfg, names, size, iters)
    if onnx:
        row.update(_onnx_rates(model, size, iters))
    return row


def _table(rows: list[dict[str, object]]) -> str:
    cols = [
        ("model", "model"), ("size", "px"), ("params_M", "params (M)"),
        ("single_scale_img_s", "1 scale img/s"), ("multi_scale_flip_img_s", "MS+flip img/s"),
        ("predict_paths_img_s", "predict (IO incl.) img/s"),
        ("pytorch_segment_img_s", "PyTorch img/s"), ("onnxruntime_img_s", "ONNX Runtime img/s"),
    ]

    def fmt(v: object) -> str:
        return "–" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(h for _, h in cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(k)) for k, _ in cols) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", help="trained checkpoint for model (a); default: demo config")
    p.add_argument("--config", default="synth_cpu", help="config of model (a) without checkpoint")
    p.add_argument("--size", type=int, default=112, help="square image size for model (a)")
    p.add_argument("--iters", type=int, default=20, help="timed single-scale images, model (a)")
    p.add_argument("--skip-vit", action="store_true", help="skip (b) ViT-B/16")
    p.add_argument("--vit-size", type=int, default=512)
    p.add_argument("--vit-iters", type=int, default=2, help="timed images for ViT-B/16")
    p.add_argument("--no-onnx", action="store_true", help="skip the ONNX Runtime comparison")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"# dscnet predict benchmark — {platform.processor() or platform.machine()}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU", flush=True)
    rows = []
    model, cfg, names = _build(args, [])
    label = f"checkpoint {Path(args.checkpoint).name}" if args.checkpoint else f"demo ({args.config})"
    rows.append(bench_model(label, model, cfg, names, args.size, args.iters,
                            max(2, args.iters // 4), not args.no_onnx, predict=True))
    print(json.dumps(rows[-1]), flush=True)

    if not args.skip_vit:
        vit, vcfg, vnames = _build(argparse.Namespace(checkpoint=None, config="voc_vit"),
                                   ["model.backbone=vit_base_patch16_224"])
        rows.append(bench_model("ViT-B/16 (voc_vit)", vit, vcfg, vnames, args.vit_size,
                                args.vit_iters, 1, not args.no_onnx, predict=False))
        print(json.dumps(rows[-1]), flush=True)

    print()
    print(_table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
