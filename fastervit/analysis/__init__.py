"""Measuring the model: FLOPs and parameters (chapter 8), throughput and latency (chapter 9)."""

from fastervit.analysis.flops import (
    COMPONENTS,
    FlopReport,
    Term,
    analytic_report,
    analytic_terms,
    build_for_counting,
    count_flops,
    count_params,
    sdpa_flop_jit,
)

__all__ = [
    "COMPONENTS",
    "FlopReport",
    "Term",
    "analytic_report",
    "analytic_terms",
    "build_for_counting",
    "count_flops",
    "count_params",
    "sdpa_flop_jit",
]
