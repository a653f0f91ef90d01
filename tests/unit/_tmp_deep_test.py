from hypothesis import given, settings, strategies as st
from kdgen.config import load_config
from kdgen.errors import KdgenError

@settings(max_examples=50, derandomize=True, database=None, deadline=None)
@given(n=st.integers(100, 3000))
def test_deep(n):
    try:
        load_config(None, ["train.steps=" + "[" * n + "]" * n])
    except KdgenError:
        pass
