"""Parameter ranges declared next to their owner's signature (components/ranges.py): the interval, its text, the
declarations merged along a class's bases, and the one line that refuses a value."""

import math

import pytest

from components.ranges import (COUNT, COUNT0, NON_NEGATIVE, POSITIVE, UNIT, Range, check_arguments, check_ranges,
                               out_of_range, ranged, ranges_of)


@pytest.mark.parametrize("interval, inside, outside, text", [
    (UNIT, [0.0, 0.5, 1.0], [-1e-9, 1.0 + 1e-9], "[0.0, 1.0]"),
    (Range(0.0, 1.0, low_open=True), [1e-9, 1.0], [0.0, 1.5], "(0.0, 1.0]"),
    (Range(0.0, 1.0, low_open=True, high_open=True), [0.5], [0.0, 1.0], "(0.0, 1.0)"),
    (POSITIVE, [1e-12, 1e9], [0.0, -1.0], "(0.0, inf)"),
    (NON_NEGATIVE, [0.0, 3.0], [-0.1], "[0.0, inf)"),
    (COUNT, [1, 10**9], [0, -5], "[1, inf)"),
    (COUNT0, [0, 7], [-1], "[0, inf)"),
    (Range(high=2), [-1e9, 2], [2.5], "(-inf, 2]"),
])  # fmt: skip
def test_a_range_holds_what_its_text_says(interval, inside, outside, text):
    assert str(interval) == text
    assert all(interval.contains(v) for v in inside)
    assert not any(interval.contains(v) for v in outside)
    assert not interval.contains(math.nan)


class Base:
    RANGES = {"discount": UNIT, "lr": POSITIVE}


class Child(Base):
    RANGES = {"lr": NON_NEGATIVE, "num_steps": COUNT}

    def __init__(self, discount: float = 0.99, lr: float = 1e-3, num_steps: int = 4, name: str = "x"):
        check_arguments(type(self), locals())


def test_a_class_declares_its_own_ranges_merged_over_its_bases():
    assert ranges_of(Child) == {"discount": UNIT, "lr": NON_NEGATIVE, "num_steps": COUNT}  # its own win
    assert ranges_of(Base) == {"discount": UNIT, "lr": POSITIVE}
    assert ranges_of(int) == {} and ranges_of(len) == {}


def test_a_hand_built_object_refuses_a_value_outside_in_one_line_with_its_default():
    Child(discount=1.0, lr=0.0, num_steps=1, name="anything")  # the edges are inside; no range, no check
    with pytest.raises(ValueError) as err:
        Child(discount=1.5)
    assert str(err.value) == ("Child.discount = 1.5 is outside [0.0, 1.0]; fix: bind a value in [0.0, 1.0], "
                              "e.g. --bind 'Child.discount = 0.99' (its default)")
    with pytest.raises(ValueError, match=r"^Child\.num_steps = 0 is outside \[1, inf\); .*= 4' \(its default\)$"):
        Child(num_steps=0)


def test_a_function_declares_its_ranges_with_ranged():
    @ranged(num_steps=COUNT)
    def schedule(num_steps: int, scale: float = 1.0) -> int:
        check_arguments(schedule, locals())
        return num_steps

    assert ranges_of(schedule) == {"num_steps": COUNT} and schedule(3) == 3
    with pytest.raises(ValueError, match=r"^schedule\.num_steps = 0 is outside \[1, inf\); fix: bind a value in "
                                         r"\[1, inf\)$"):  # no default: no example
        schedule(0)


def test_check_ranges_passes_what_is_not_a_number_or_has_no_range():
    ranges = {"max_grad_norm": POSITIVE, "flag": COUNT}
    check_ranges("Agent", ranges, {"max_grad_norm": None, "flag": True, "other": -1, "tensor": object()})
    with pytest.raises(ValueError, match=r"^Agent\.max_grad_norm = -1\.0 is outside \(0\.0, inf\)"):
        check_ranges("Agent", ranges, {"max_grad_norm": -1.0}, {"max_grad_norm": 2.0})


def test_the_example_is_the_default_only_when_it_is_a_number_inside():
    assert out_of_range("A.x", 2, COUNT0, 1).endswith("e.g. --bind 'A.x = 1' (its default)")
    assert out_of_range("A.x", -2, COUNT, 0) == "A.x = -2 is outside [1, inf); fix: bind a value in [1, inf)"
    assert out_of_range("A.x", -2, COUNT, None) == out_of_range("A.x", -2, COUNT, "auto")


def test_a_name_stands_for_the_class_where_configs_know_it_by_another():
    with pytest.raises(ValueError, match=r"^Trainer\.num_steps = 0 is outside"):
        check_arguments(Child, {"num_steps": 0}, name="Trainer")
