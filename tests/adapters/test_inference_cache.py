"""ModelCache: one session per model content; digests remembered per bytes object."""

from __future__ import annotations

import pytest

from vigil.adapters import inference


def test_same_content_gives_the_same_session_and_pins_are_still_checked() -> None:
    cache = inference.ModelCache()
    data = inference.builtin_bytes()
    first = cache.get(data)
    assert cache.get(data) is first and cache.get(bytes(bytearray(data))) is first
    assert cache.loads == 1
    with pytest.raises(inference.ModelError) as wrong:
        cache.get(data, expected_sha256="0" * 64)
    assert wrong.value.reason.value == "ModelDigestMismatch"
    assert cache.get(data, expected_sha256=inference.digest(data)) is first

