"""One wording for an option that takes one of a few values."""
import pytest

from mmapt.choices import check_choice


def test_a_listed_value_passes():
    check_choice('mode', 'a', ('a', 'b'))


@pytest.mark.parametrize('choices, allowed', [
    (('a', ), "'a'"),
    (('a', 'b'), "'a' or 'b'"),
    (('a', 'b', 'c'), "'a', 'b' or 'c'"),
])
def test_the_error_names_the_option_the_values_and_the_input(choices, allowed):
    with pytest.raises(ValueError) as err:
        check_choice('mode', 'z', choices)
    assert str(err.value) == f"mode must be {allowed}, got 'z'"
