"""Checks of the parameters every block's constructor takes."""

__all__ = ["check_bool", "check_int"]


def check_int(owner, name, value, minimum, maximum=None):
    """Raise a clear error unless ``value`` is an int in ``minimum..maximum``.

    ``owner`` is the elaboratable being constructed: when the check fails it is marked as
    deliberately unused, so the error is not followed by an "UnusedElaboratable" warning.
    """
    try:
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name} must be an integer, not {value!r}")
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else \
                f"at least {minimum}"
            raise ValueError(f"{name} must be {bound}, not {value!r}")
    except Exception:
        owner._MustUse__silence = True
        raise


def check_bool(owner, name, value):
    """Raise a clear error unless ``value`` is a bool; ``owner`` as for :func:`check_int`."""
    if not isinstance(value, bool):
        owner._MustUse__silence = True
        raise TypeError(f"{name} must be a bool, not {value!r}")
