"""Model families (registered in kdgen.models.registry.MODEL_FAMILIES on import)."""

from .classifier import CLASSIFIER_FAMILIES, CNNClassifier, MLPClassifier, ResNetClassifier
from .featnet import FeatureExtractor, FeatureNet
from .gan import DCGANDiscriminator, DCGANGenerator
from .img2img import PatchDiscriminator, ResnetGenerator, UNetGenerator
from .students import build_student, prune_init

__all__ = ["CLASSIFIER_FAMILIES", "CNNClassifier", "MLPClassifier", "ResNetClassifier", "DCGANGenerator", "DCGANDiscriminator", "UNetGenerator", "ResnetGenerator", "PatchDiscriminator", "FeatureNet", "FeatureExtractor", "build_student", "prune_init"]
