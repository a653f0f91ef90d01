import pytest

from kdgen.errors import KdgenError
from kdgen.methods import METHODS
from kdgen.registry import Registry


def test_register_get_and_names():
    r = Registry("widget")
    r.register("alpha")(int)
    assert r.get("alpha") is int and r.names() == ["alpha"] and "alpha" in r


def test_duplicate_name_raises():
    r = Registry("widget")
    r.register("alpha")(int)
    with pytest.raises(ValueError, match="twice"):
        r.register("alpha")(float)


def test_unknown_name_lists_choices_and_suggests():
    r = Registry("widget")
    r.register("output")(int)
    r.register("feature")(int)
    with pytest.raises(KdgenError, match=r"did you mean 'output'.*choose one of: feature, output"):
        r.get("outptu")


def test_methods_registry_has_the_generator_methods_with_summaries():
    assert {"output", "feature", "perceptual", "adversarial"} <= set(METHODS.names())
    assert all(METHODS.summary(n) for n in METHODS.names())
