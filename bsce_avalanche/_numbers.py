"""NumPy and torch scalars accepted wherever a Python number is (``tau=np.float32(0.5)``,
``mem_size=torch.tensor(200)``), without importing either here."""

from __future__ import annotations


def plain_number(value):
    """A NumPy scalar, 0-d array or 0-d tensor as the Python number it holds; anything else as is."""
    if getattr(value, "ndim", None) == 0 and callable(getattr(value, "item", None)) \
            and not isinstance(value, (str, bytes)):
        return value.item()
    return value
