"""`gaussjax.checks`: one validation family, its ranges and its errors (each also the built-in error of its kind)."""

import fractions
import math

import numpy as np
import pytest

import gaussjax as gj
from gaussjax._checks import check_data_matrix
from gaussjax.checks import (
    InputError,
    InputFileNotFoundError,
    InputKeyError,
    InputTypeError,
    InputValueError,
    check_choice,
    check_images,
    check_int,
    check_real,
)


def test_the_errors_are_one_family_and_the_builtin_of_their_kind():
    for error, builtin in ((InputValueError, ValueError), (InputTypeError, TypeError), (InputKeyError, KeyError),
                           (InputFileNotFoundError, FileNotFoundError)):
        assert issubclass(error, InputError) and issubclass(error, builtin)
    assert gj.InputError is InputError
    assert str(InputKeyError("no array 'c'")) == "no array 'c'"  # the message, not KeyError's quoted repr


@pytest.mark.parametrize("value", [0, 5, np.int64(7), 2**70])
def test_check_int_returns_python_ints_in_range(value):
    out = check_int("n", value, minimum=0)
    assert out == int(value) and type(out) is int


@pytest.mark.parametrize("value, minimum, maximum, error, message", [
    (True, None, None, InputTypeError, "`n` must be an integer, got bool True"),
    (2.0, None, None, InputTypeError, "`n` must be an integer, got float 2.0"),
    ("3", None, None, InputTypeError, "`n` must be an integer, got str '3'"),
    (0, 1, None, InputValueError, "`n` must be a positive integer, got 0"),
    (1, 2, None, InputValueError, "`n` must be >= 2, got 1"),
    (11, None, 10, InputValueError, "`n` must be <= 10, got 11"),
    (-1, 0, 2**32 - 1, InputValueError, r"`n` must be an integer in \[0, 4294967295\], got -1"),
])
def test_check_int_names_the_argument_and_the_range(value, minimum, maximum, error, message):
    with pytest.raises(error, match=message):
        check_int("n", value, minimum=minimum, maximum=maximum)


@pytest.mark.parametrize("value", [0.5, 1, fractions.Fraction(1, 3), np.float32(0.25), 1e308])
def test_check_real_accepts_finite_reals_as_floats(value):
    out = check_real("x", value, minimum=0)
    assert out == float(value) and type(out) is float


@pytest.mark.parametrize("value, kwargs, error, message", [
    (True, {}, InputTypeError, "`x` must be a finite number, got bool True"),
    ("1", {}, InputTypeError, "`x` must be a finite number, got str '1'"),
    (1j, {}, InputTypeError, "`x` must be a finite number, got complex"),
    (math.nan, {}, InputValueError, "`x` must be a finite number, got nan"),
    (math.inf, {"minimum": 0}, InputValueError, "`x` must be a finite number >= 0, got inf"),
    (0.0, {"minimum": 0, "strict": True}, InputValueError, "`x` must be a finite number > 0, got 0.0"),
    (-1e-300, {"minimum": 0}, InputValueError, "`x` must be a finite number >= 0"),
    (1.0, {"minimum": 0, "maximum": 1, "strict": True}, InputValueError, "`x` must be a finite number > 0 and < 1"),
    (2.0, {"maximum": 1}, InputValueError, "`x` must be a finite number <= 1, got 2.0"),
])
def test_check_real_names_the_argument_and_the_range(value, kwargs, error, message):
    with pytest.raises(error, match=message):
        check_real("x", value, **kwargs)


def test_check_real_bounds_are_inclusive_unless_strict():
    assert check_real("x", 0, minimum=0, maximum=0) == 0.0
    assert check_real("x", 1e-300, minimum=0, strict=True) == 1e-300


def test_check_choice_lists_the_choices():
    assert check_choice("weights", "ema", ("ema", "raw")) == "ema"
    with pytest.raises(InputValueError, match="`weights` must be one of 'ema', 'raw'; got 'EMA'"):
        check_choice("weights", "EMA", ("ema", "raw"))


def test_check_images_shape_finiteness_and_overflow():
    images = check_images("images", np.zeros((2, 3, 4, 1), np.int32))
    assert images.shape == (2, 3, 4, 1) and images.dtype.kind == "f"
    with pytest.raises(InputValueError, match=r"`images` must be a 4-D array, got shape \(3, 4, 1\)"):
        check_images("images", np.zeros((3, 4, 1)))
    with pytest.raises(InputValueError, match="no empty axis"):
        check_images("images", np.zeros((0, 3, 4, 1)))
    with pytest.raises(InputValueError, match="`images` contains NaN or infinite values"):
        check_images("images", np.full((1, 2, 2, 1), np.nan))
    with pytest.raises(InputValueError, match="`images` is too large for float32"):
        check_images("images", np.full((1, 2, 2, 1), 1e20, np.float32))


def test_norm_checks_in_blocks_find_the_last_rows(monkeypatch):
    # on the host the squared norms are formed a block of rows at a time (BLOCK_ELEMENTS values)
    monkeypatch.setattr("gaussjax._checks.BLOCK_ELEMENTS", 8)
    data = np.zeros((40, 4), np.float32)
    data[-1, 2] = 3e19  # finite, but 9e38 > float32's 3.4e38
    with pytest.raises(InputValueError, match=r"`X` is too large for float32: .* \(max \|X\| = 3e\+19\)"):
        check_data_matrix("X", data)
    data[-2, 0] = np.inf  # non-finite values are reported first, wherever the overflow is
    with pytest.raises(InputValueError, match="`X` contains NaN or infinite values"):
        check_data_matrix("X", data)
