"""Model families (registered in kdgen.io.MODEL_FAMILIES on import)."""

from .featnet import FeatureExtractor, FeatureNet
from .gan import DCGANDiscriminator, DCGANGenerator
from .students import build_student, prune_init

__all__ = ["DCGANGenerator", "DCGANDiscriminator", "FeatureNet", "FeatureExtractor", "build_student", "prune_init"]
