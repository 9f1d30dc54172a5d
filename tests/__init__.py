import pytest

# Assertions in the shared helpers report their values like those in test modules do.
pytest.register_assert_rewrite("tests.support")
