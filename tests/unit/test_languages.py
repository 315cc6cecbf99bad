from __future__ import annotations

import pytest

from pipeline_core.languages import UnknownLanguageError, language_name, normalize_language


@pytest.mark.parametrize(
    ("value", "code"),
    [
        ("hebrew", "he"), ("Hebrew", "he"), ("HE", "he"), ("iw", "he"), ("heb", "he"),
        (" he ", "he"), ("english", "en"), ("en", "en"), ("eng", "en"), ("yiddish", "yi"),
        ("Haitian Creole", "ht"), ("haitian_creole", "ht"), ("castilian", "es"), ("yue", "yue"),
    ],
)  # fmt: skip
def test_names_and_codes_normalise(value: str, code: str) -> None:
    assert normalize_language(value) == code


@pytest.mark.parametrize("value", ["klingon", "", "h", "hebrew!"])
def test_unknown_language_is_a_clear_error(value: str) -> None:
    with pytest.raises(UnknownLanguageError) as caught:
        normalize_language(value)
    message = str(caught.value)
    assert repr(value) in message
    assert "hebrew (he)" in message
    assert "english (en)" in message


def test_language_name() -> None:
    assert language_name("iw") == "hebrew"
