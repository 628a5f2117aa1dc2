"""Parameter checks with one wording for the whole library (scikit-learn's).

"The 'min_similarity' parameter of build_knn_graph must be a float in [-1, 1].
Got 1.5 instead."
"""

from __future__ import annotations

import numbers

from .errors import InvalidInputError, InvalidTypeError


def _message(name: str, func: str, expected: str, value: object) -> str:
    return f"The {name!r} parameter of {func} must be {expected}. Got {value!r} instead."


def check_type(value: object, types: type | tuple[type, ...], name: str, func: str, expected: str):
    """Return ``value`` when it is an instance of ``types``, else raise naming what it is.

    ``expected`` completes "must be ..." and may say where such a value comes from.
    """
    if not isinstance(value, types):
        raise InvalidTypeError(
            f"The {name!r} parameter of {func} must be {expected}. "
            f"Got {type(value).__name__} instead."
        )
    return value


def check_int(
    value: object,
    name: str,
    func: str,
    *,
    min_value: int | None = None,
    max_value: int | None = None,
) -> int:
    """Return ``value`` as int, or raise when it is not an integer within the bounds."""
    if min_value is not None and max_value is not None:
        expected = f"an int in [{min_value}, {max_value}]"
    elif min_value is not None:
        expected = f"an int >= {min_value}"
    else:
        expected = "an int" if max_value is None else f"an int <= {max_value}"
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise InvalidTypeError(_message(name, func, expected, value))
    if (min_value is not None and value < min_value) or (
        max_value is not None and value > max_value
    ):
        raise InvalidInputError(_message(name, func, expected, value))
    return int(value)


def check_float(value: object, name: str, func: str, *, low: float, high: float) -> float:
    """Return ``value`` as float, or raise when it is not a real number in [low, high]."""
    expected = f"a float in [{low:g}, {high:g}]"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidTypeError(_message(name, func, expected, value))
    if not low <= float(value) <= high:  # also rejects NaN
        raise InvalidInputError(_message(name, func, expected, value))
    return float(value)


def in_family(value: object, prefixes) -> bool:
    """``value`` is a str ``PREFIX:NAME`` with ``PREFIX`` in ``prefixes`` and ``NAME`` not empty."""
    if not isinstance(value, str):
        return False
    prefix, _, rest = value.partition(":")
    return bool(rest) and prefix in tuple(prefixes)


def check_choice(value: object, name: str, func: str, choices, prefixes=()) -> str:
    """Return ``value`` when it is one of ``choices``, else raise listing them.

    A str ``PREFIX:NAME`` (``NAME`` not empty) with ``PREFIX`` in ``prefixes`` is also
    accepted: an open family such as ``timm:convnext_tiny``, whose owner checks ``NAME``.
    """
    choices = list(choices)
    if in_family(value, prefixes):
        return value  # type: ignore[return-value]
    if value not in choices:
        listed = choices + [f"{prefix}:NAME" for prefix in prefixes]
        expected = "one of " + ", ".join(repr(c) for c in listed)
        raise InvalidInputError(_message(name, func, expected, value))
    return value  # type: ignore[return-value]
