"""Declared byte counts are parsed strictly, and sizes are checked against their limits."""

from __future__ import annotations

import pytest

from popfuse.runtime.server.errors import BadRequestError, PayloadTooLargeError
from popfuse.runtime.server.limits import byte_count, check_size


@pytest.mark.parametrize("text", ["²", "9" * 5000, "-1", " 3", "1e3", "", "١٢", "0x10"])
def test_only_plain_ascii_digits_are_a_byte_count(text):
    with pytest.raises(BadRequestError, match="Inference-Header-Content-Length must be a byte count"):
        byte_count("Inference-Header-Content-Length", text)


def test_a_byte_count_and_its_limit():
    assert byte_count("Content-Length", "0") == 0 and byte_count("Content-Length", "123") == 123
    check_size("the body", 10, 10)
    with pytest.raises(PayloadTooLargeError, match="the body has 11 bytes, over the limit of 10"):
        check_size("the body", 11, 10)
