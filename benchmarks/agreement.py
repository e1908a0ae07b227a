"""benchmarks/runtimes.py's shared files and its int8 agreement: photos, weights, exports, quantised models.

`prepare` writes once what every contender process starts from (contenders.py names the files);
`measure` compares every int8 path with its own fp32 model, top-1 for top-1, on held-out photos.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import contenders as c
import numpy as np
import torch

from vggnet.configs import ModelConfig
from vggnet.data import ImageFolder, rescale, to_uint8_tensor
from vggnet.model import VGG
from vggnet.weights import Preprocessing, load_weights, save_weights


def photos(root: Path, count: int, side: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`count` photos evenly spread over the class-sorted folder (0: all), shorter side rescaled to `side`,
    centre-cropped to `crop`: a (N, 3, crop, crop) uint8 batch and the labels."""
    folder = ImageFolder(root)
    picks = np.linspace(0, len(folder) - 1, count).round().astype(int) if count else range(len(folder))
    images, labels = [], []
    for i in picks:
        img, label = folder[int(i)]
        if img is None:
            continue
        x = to_uint8_tensor(rescale(img, side))
        top, left = (x.shape[1] - crop) // 2, (x.shape[2] - crop) // 2
        images.append(x[:, top : top + crop, left : left + crop])
        labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def generated(count: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Smooth random uint8 images (smoke runs, or no photos): upsampled noise, ten labels in turn."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(count, 3, 7, 7, generator=g)
    x = torch.nn.functional.interpolate(low, size=size, mode="bilinear").clamp(0, 1)
    return (255 * x).to(torch.uint8), torch.arange(count) % 10


def _preprocessed(x: torch.Tensor, pre: Preprocessing) -> np.ndarray:
    return np.ascontiguousarray(pre(x.float() / 255).numpy())


def prepare(args: argparse.Namespace, folder: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Weights (seed 0), photos, the ONNX export and both runtimes' int8 models, written to `folder`."""
    torch.manual_seed(0)
    cfg = ModelConfig(**{"arch": spec["arch"], **{k: v for k, v in spec.items() if k != "arch"}})
    model = VGG(cfg).eval()
    size = cfg.input_size
    torch.save(model.state_dict(), folder / c.WEIGHTS)
    (folder / c.CONFIG).write_text(json.dumps(dataclasses.asdict(model.cfg)))
    real = not args.smoke and (args.data / "train").is_dir()
    side = round(size * 256 / 224)  # the paper's Q = 256 for a 224 crop
    if real:
        calibration, _ = photos(args.data / "train", args.calibration, side, size)
        inputs, _ = photos(args.data / "val", max(map(int, args.batches.split(","))), side, size)
    else:
        calibration, _ = generated(args.calibration, size, 1)
        inputs, _ = generated(max(map(int, args.batches.split(","))), size, 2)
    pre = Preprocessing.torchvision()
    np.save(folder / c.CALIBRATION, _preprocessed(calibration, pre))
    np.save(folder / c.INPUTS, _preprocessed(inputs, pre))
    seconds = {}
    start = time.perf_counter()
    c.export_onnx(c.torchvision_model(folder), folder / c.ONNX, torch.from_numpy(np.load(folder / c.INPUTS)[:1]))
    seconds["onnx_export"] = time.perf_counter() - start
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(c.CONTENDERS)
    calib = np.load(folder / c.CALIBRATION)
    if "ONNX Runtime int8" in names:
        start = time.perf_counter()
        c.quantize_onnxruntime(folder / c.ONNX, folder / c.ONNX_INT8, calib)
        seconds["onnxruntime_quantize"] = time.perf_counter() - start
    if "OpenVINO int8" in names:
        start = time.perf_counter()
        c.quantize_openvino(folder / c.ONNX, folder / c.OV_INT8, calib)
        seconds["nncf_quantize"] = time.perf_counter() - start
    # the dense evaluation's net: the same configuration with Imagenette's (and the digits') ten classes
    save_weights(VGG(dataclasses.replace(cfg, num_classes=10)).eval(), folder / "dense.safetensors")
    return {
        "model": model.cfg.display_name() + (f" width {model.cfg.width:g}" if model.cfg.width != 1 else ""),
        "input": size,
        "weights": f"vggnet's init ({cfg.init}), seed 0, the same file for every contender",
        "photos": "Imagenette" if real else "generated smooth noise",
        "calibration_images": len(calibration),
        "timed_inputs": f"{len(inputs)} validation photos, shorter side {side}, centre crop {size}" if real else "",
        "seconds": seconds,
    }


def _logits(run: Any, x: np.ndarray, batch: int = 64) -> np.ndarray:
    return np.concatenate([run(np.ascontiguousarray(x[i : i + batch])) for i in range(0, len(x), batch)])


def measure(args: argparse.Namespace, folder: Path, smoke: dict[str, Any] | None) -> dict[str, Any]:
    """Top-1 agreement of each int8 path with its own fp32 model on held-out photos (the trained net's)."""
    torch.set_num_threads(args.threads)
    if smoke is not None:
        model, pre = c.vggnet_model(folder), Preprocessing.torchvision()
        size = model.cfg.input_size
        (calib, _), (val, labels) = generated(args.agreement_calibration, size, 3), generated(16, size, 4)
        source = "the smoke run's random net on generated images"
    else:
        model, meta = load_weights(args.trained)
        model.eval()
        pre, size = meta.preprocessing, model.cfg.input_size
        side = round(size * 256 / 224)
        calib, _ = photos(args.data / "train", args.agreement_calibration, side, size)
        val, labels = photos(args.data / "val", 0, side, size)
        source = str(args.trained)
    x, cal = _preprocessed(val, pre), _preprocessed(calib, pre)
    sub = folder / "agreement"
    sub.mkdir(exist_ok=True)
    c.export_onnx(model, sub / c.ONNX, torch.from_numpy(x[:1]))
    c.quantize_onnxruntime(sub / c.ONNX, sub / c.ONNX_INT8, cal)
    c.quantize_openvino(sub / c.ONNX, sub / c.OV_INT8, cal)
    from vggnet.optimize import quantize_int8

    int8 = quantize_int8(model, torch.from_numpy(cal).split(8))
    pairs = {
        "ONNX Runtime": (
            c.onnxruntime_session(sub / c.ONNX, args.threads),
            c.onnxruntime_session(sub / c.ONNX_INT8, args.threads),
        ),
        "OpenVINO": (
            c.openvino_compiled(sub / c.ONNX, args.threads, INFERENCE_PRECISION_HINT="f32"),
            c.openvino_compiled(sub / c.OV_INT8, args.threads),
        ),
        "vggnet": (c.torch_run(model, args.threads), c.torch_run(int8, args.threads)),
    }
    rows = {}
    for family, (fp32, q) in pairs.items():
        a, b = _logits(fp32, x).argmax(1), _logits(q, x).argmax(1)
        y = labels.numpy()
        rows[family] = {
            "agreement": float((a == b).mean()),
            "top1_fp32": float((a == y).mean()),
            "top1_int8": float((b == y).mean()),
        }
    name = model.cfg.display_name() + (f", width {model.cfg.width:g}" if model.cfg.width != 1 else "")
    return {"net": source, "config": f"{name}, input {size}", "images": len(x), "calibration": len(cal), "paths": rows}
