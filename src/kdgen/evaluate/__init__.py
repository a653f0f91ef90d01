from .cost import count_params, latency_ms, macs_per_image, measure_cost
from .quality import QualityMetric, evaluate_quality, fidelity, load_feature_extractor, psnr

__all__ = ["QualityMetric", "count_params", "evaluate_quality", "fidelity", "latency_ms", "load_feature_extractor",
           "macs_per_image", "measure_cost", "psnr"]
