"""Measurements: quality in a feature space (FID, KID, precision/recall/density/coverage, fidelity) and cost."""

from .cost import count_params, latency_ms, macs_per_image, measure_cost
from .prdc import prdc
from .quality import QualityMetric, evaluate_quality, feature_space, fidelity, load_feature_extractor, load_feature_net, psnr

__all__ = ["QualityMetric", "count_params", "evaluate_quality", "feature_space", "fidelity", "latency_ms", "load_feature_extractor",
           "macs_per_image", "measure_cost", "prdc", "psnr", "load_feature_net"]
