"""Import checkpoints written by the original GANgealing code (``train.py`` /
``train_cluster_classifier.py``): ``g_ema``, ``t_ema``, ``ll``, ``args`` and, for clustering
models, ``classifier``.

The architecture is read from tensor shapes; the few choices the weights cannot show
(``inject``, the STN input size when no downsampling kernel is stored, ``num_fp16_res``, flips)
come from the checkpoint's ``args`` or from keyword arguments.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Tuple

import torch

from ..checkpoint import Checkpoint, CheckpointError, args_to_dict
from ..config import ClassifierConfig, STNConfig, TargetConfig

# Width table of the original STN / classifier before channel_multiplier and the width cap.
_STN_TABLE_BASE = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128, 256: 64, 512: 32, 1024: 16}


def stn_width(resolution: int, channel_multiplier: float, max_channels: int) -> int:
    """The original table entry at ``resolution`` (512 up to 32 px, then 256*cm, 128*cm, ...), capped."""
    base = _STN_TABLE_BASE[resolution] if resolution in _STN_TABLE_BASE else 512
    value = base if resolution <= 32 else base * channel_multiplier
    return int(min(max_channels, value))


def _branches(sd: Mapping[str, torch.Tensor]) -> Dict[int, Dict[str, torch.Tensor]]:
    """Split a (possibly single, un-prefixed) STN state dict into its ``stns.i`` branches."""
    if not any(k.startswith("stns.") for k in sd):
        sd = {f"stns.0.{k}": v for k, v in sd.items()}
    out: Dict[int, Dict[str, torch.Tensor]] = {}
    for k, v in sd.items():
        _, i, rest = k.split(".", 2)
        out.setdefault(int(i), {})[rest] = v
    return out


def normalize_stn_state_dict(sd: Mapping[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Original STN state dict -> ours: ``stns.i.`` prefixes always, constant resampling kernels dropped."""
    out = {}
    for i, branch in _branches(sd).items():
        for k, v in branch.items():
            if k.startswith("input_downsample."):
                continue  # rebuilt from the config, as the original's loader does
            out[f"stns.{i}.{k}"] = v
    return out


def infer_stn_config(sd: Mapping[str, torch.Tensor], input_size: Optional[int] = None) -> STNConfig:
    """Infer an :class:`STNConfig` from an original (or our) STN state dict."""
    branches = _branches(sd)
    transforms, heads = [], set()
    for i in sorted(branches):
        b = branches[i]
        if "warp_head.linear.weight" in b:
            transforms.append("similarity")
            heads.add(b["warp_head.linear.weight"].shape[0] // 4)
        elif "warp_head.flow_out.2.weight" in b:
            transforms.append("flow")
            heads.add(b["warp_head.flow_out.2.weight"].shape[0] // 2)
        else:
            raise CheckpointError(f"STN branch stns.{i} has neither a similarity nor a flow head")
    if len(heads) != 1:
        raise CheckpointError(f"STN branches disagree on the number of heads: {sorted(heads)}")
    b0 = branches[0]
    n_blocks = len({k.split(".")[1] for k in b0 if k.startswith("convs.")}) - 1
    flow_size = 2 ** (n_blocks + 2)
    width_in = b0["convs.0.0.weight"].shape[0]
    max_channels = b0["final_conv.0.weight"].shape[0]
    base = _STN_TABLE_BASE.get(flow_size, 512)
    channel_multiplier = width_in / base if flow_size > 32 else 1.0
    if input_size is None:
        kernel = b0.get("input_downsample.kernel_horz")
        # The original's tent filter for a downsampling factor f has 2f taps.
        input_size = flow_size * (kernel.shape[-1] // 2) if kernel is not None else flow_size
    cfg = STNConfig(
        transforms=tuple(transforms),
        flow_size=flow_size,
        input_size=int(input_size),
        channel_multiplier=float(channel_multiplier),
        max_channels=int(max_channels) if max_channels < 512 else 512,
        num_heads=heads.pop(),
        image_channels=b0["convs.0.0.weight"].shape[1],
    )
    _check_widths(b0, cfg)
    return cfg


def _check_widths(branch: Mapping[str, torch.Tensor], cfg: STNConfig) -> None:
    res = cfg.flow_size
    for j in range(1, int(math.log2(cfg.flow_size)) - 1):
        w = branch.get(f"convs.{j}.conv1.0.weight")
        expected = stn_width(res, cfg.channel_multiplier, cfg.max_channels)
        if w is not None and w.shape[0] != expected:
            raise CheckpointError(
                f"STN widths do not follow the original width table (block {j}: {w.shape[0]} channels, "
                f"expected {expected} for {cfg}); this is not a GANgealing STN we can rebuild"
            )
        res //= 2


def infer_target_config(sd: Mapping[str, torch.Tensor], n_latent: int, inject: int) -> TargetConfig:
    """Infer the congealing-target config from an original ``ll`` (DirectionInterpolator) state dict."""
    try:
        coefficients, directions = sd["coefficients"], sd["directions"]
    except KeyError as e:
        raise CheckpointError(f"'ll' state dict lacks {e.args[0]!r}: not a GANgealing latent learner") from e
    if directions.shape[0] != coefficients.shape[-1]:
        raise CheckpointError(
            f"'ll' directions {tuple(directions.shape)} do not match coefficients {tuple(coefficients.shape)}")
    return TargetConfig(
        style_dim=directions.shape[1],
        n_latent=n_latent,
        num_directions=directions.shape[0],
        inject=inject,
        num_heads=coefficients.shape[0] if coefficients.ndim == 2 else 1,
    )


def infer_classifier_config(sd: Mapping[str, torch.Tensor], stn_cfg: STNConfig, flips: Optional[bool]) -> ClassifierConfig:
    """Infer the cluster classifier's config; it shares the similarity STN's trunk shape."""
    from ..models.classifier import classifier_config_for

    n_out = sd["to_logits.weight"].shape[0]
    if flips is None:
        flips = n_out == 2 * stn_cfg.num_heads
    cfg = classifier_config_for(stn_cfg, flips=bool(flips))
    return dataclasses.replace(cfg, num_clusters=n_out // 2 if flips else n_out)


def import_original(
    obj: Mapping[str, Any],
    *,
    num_fp16_res: Optional[int] = None,
    inject: Optional[int] = None,
    test_settings: Optional[Dict[str, Any]] = None,
) -> Tuple[Checkpoint, str]:
    """Convert a loaded original GANgealing checkpoint dict into a gangealing :class:`Checkpoint`."""
    from ..models.stylegan2 import infer_generator_config

    args = args_to_dict(obj.get("args"))
    if num_fp16_res is None:
        num_fp16_res = int(args.get("num_fp16_res", 0) or 0)
    g_cfg = infer_generator_config(obj["g_ema"], num_fp16_res=num_fp16_res)
    stn_cfg = infer_stn_config(obj["t_ema"], input_size=args.get("real_size"))
    if inject is None:
        if "inject" not in args:
            raise CheckpointError("the checkpoint does not record 'inject' (how many W+ layers come from the "
                                  "target); pass --inject N (the original's default was 5 at 256 px)")
        inject = int(args["inject"])
    n_latent = int(math.log2(g_cfg.size)) * 2 - 2
    t_cfg = infer_target_config(obj["ll"], n_latent=n_latent, inject=inject)

    config = {"generator": g_cfg.to_dict(), "stn": stn_cfg.to_dict(), "target": t_cfg.to_dict()}
    state = {
        "generator": dict(obj["g_ema"]),
        "stn": normalize_stn_state_dict(obj["t_ema"]),
        "target": dict(obj["ll"]),
    }
    what = "an original GANgealing checkpoint"
    if "classifier" in obj:
        flips = args.get("flips")
        c_cfg = infer_classifier_config(obj["classifier"], stn_cfg, None if flips is None else bool(flips))
        config["classifier"] = c_cfg.to_dict()
        state["classifier"] = {k: v for k, v in obj["classifier"].items() if not k.startswith("input_downsample.")}
        what += f" with a cluster classifier ({c_cfg.num_clusters} clusters{', flips' if c_cfg.flips else ''})"
    test = {"padding_mode": args.get("padding_mode", "border"), "iters": 1}
    test.update(test_settings or {})
    meta = {"source": "original-gangealing", "original_args": args, "test": test}
    step = int(args.get("start_iter", 0) or 0)
    return Checkpoint(kind="model", config=config, state=state, step=step, meta=meta), what
