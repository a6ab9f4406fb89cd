"""Evaluation metrics (PCK-transfer)."""
from .pck import (
    MatchedPoints,
    PCKAccumulator,
    PCKResult,
    apply_match,
    bootstrap_std,
    evaluate_pck_transfer,
    match_flows_pick,
    pck_correct,
    pck_thresholds,
)

__all__ = [
    "MatchedPoints",
    "PCKAccumulator",
    "PCKResult",
    "apply_match",
    "bootstrap_std",
    "evaluate_pck_transfer",
    "match_flows_pick",
    "pck_correct",
    "pck_thresholds",
]
