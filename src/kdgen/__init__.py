"""kdgen - knowledge distillation for image models.

Public API: distill, train_teacher, train_features, evaluate, sample, report, compare, export, bench_latency, load_model,
load_config; the face wrappers Generator and Classifier for a model of the user's own.
"""

__version__ = "0.1.0"

from .api import Result, compare, distill, evaluate, report, sample, train_features, train_teacher  # noqa: E402
from .config import RunConfig, load_config  # noqa: E402
from .errors import KdgenError  # noqa: E402
from .export import bench_latency, export  # noqa: E402
from .faces import Classifier, Face, Generator, ImageToImage, face_of  # noqa: E402
from .models.loading import load_model, save_model  # noqa: E402

__all__ = [
    "Classifier", "Face", "Generator", "ImageToImage", "KdgenError", "Result", "RunConfig", "bench_latency", "compare", "export", "distill", "evaluate",
    "face_of", "report", "load_config", "load_model", "sample", "save_model",
    "train_features", "train_teacher", "__version__",
]
