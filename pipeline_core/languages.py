"""Language names users write, normalised to Whisper's language codes.

Users write ``hebrew``, ``Hebrew``, ``he``, ``iw``, ``heb``... The pipeline pins the
transcription language (Whisper's detection is unreliable for Hebrew), so every name must
map to exactly one Whisper code or be refused with the list of what is accepted.
"""

from __future__ import annotations

from typing import Final

# Whisper's own table (openai/whisper tokenizer.py LANGUAGES): code -> English name.
WHISPER_LANGUAGES: Final[dict[str, str]] = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian",
    "ko": "korean", "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish",
    "pl": "polish", "ca": "catalan", "nl": "dutch", "ar": "arabic", "sv": "swedish",
    "it": "italian", "id": "indonesian", "hi": "hindi", "fi": "finnish", "vi": "vietnamese",
    "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay", "cs": "czech",
    "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian",
    "la": "latin", "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak",
    "te": "telugu", "fa": "persian", "lv": "latvian", "bn": "bengali", "sr": "serbian",
    "az": "azerbaijani", "sl": "slovenian", "kn": "kannada", "et": "estonian",
    "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian",
    "sw": "swahili", "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala",
    "km": "khmer", "sn": "shona", "yo": "yoruba", "so": "somali", "af": "afrikaans",
    "oc": "occitan", "ka": "georgian", "be": "belarusian", "tg": "tajik", "sd": "sindhi",
    "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao", "uz": "uzbek",
    "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan",
    "tl": "tagalog", "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian",
    "ln": "lingala", "ha": "hausa", "ba": "bashkir", "jw": "javanese", "su": "sundanese",
    "yue": "cantonese",
}  # fmt: skip

# Other names in common use: Whisper's own aliases, deprecated ISO 639-1 codes and the
# ISO 639-2/3 codes that on-prem systems tend to emit.
_ALIASES: Final[dict[str, str]] = {
    "iw": "he", "heb": "he", "ivrit": "he", "eng": "en", "ara": "ar", "rus": "ru",
    "fra": "fr", "fre": "fr", "deu": "de", "ger": "de", "spa": "es", "yid": "yi", "ji": "yi",
    "ita": "it", "por": "pt", "jpn": "ja", "kor": "ko", "zho": "zh", "chi": "zh",
    "mandarin": "zh", "nld": "nl", "dut": "nl", "pol": "pl", "tur": "tr", "ukr": "uk",
    "fas": "fa", "per": "fa", "farsi": "fa", "hin": "hi", "ell": "el", "gre": "el",
    "in": "id", "jv": "jw", "burmese": "my", "valencian": "ca", "flemish": "nl",
    "haitian": "ht", "letzeburgesch": "lb", "pushto": "ps", "panjabi": "pa",
    "moldavian": "ro", "moldovan": "ro", "sinhalese": "si", "castilian": "es",
}  # fmt: skip

_NAME_TO_CODE: Final[dict[str, str]] = {name: code for code, name in WHISPER_LANGUAGES.items()}


class UnknownLanguageError(ValueError):
    """A language name or code that maps to no Whisper language."""

    def __init__(self, value: str) -> None:
        self.value = value
        accepted = ", ".join(f"{name} ({code})" for code, name in sorted(WHISPER_LANGUAGES.items()))
        super().__init__(
            f"unknown language {value!r}; accepted are a Whisper language name or code "
            f"(case-insensitive; also ISO 639-2 codes such as 'heb' and the old code 'iw'): "
            f"{accepted}"
        )


def normalize_language(value: str) -> str:
    """Return the Whisper code for a user's language name or code (``"Hebrew"`` -> ``"he"``)."""
    key = value.strip().lower().replace("_", " ")
    if key in WHISPER_LANGUAGES:
        return key
    if key in _NAME_TO_CODE:
        return _NAME_TO_CODE[key]
    if key in _ALIASES:
        return _ALIASES[key]
    raise UnknownLanguageError(value)


def language_name(code: str) -> str:
    """English name of a Whisper language code, for prompts and reports."""
    return WHISPER_LANGUAGES[normalize_language(code)]


# Whisper languages written right to left (Hebrew and Yiddish in Hebrew script; Arabic,
# Persian, Urdu, Pashto and Sindhi in Arabic script): their subtitles and documents carry
# the direction marks and settings that make players and word processors lay them out RTL.
RIGHT_TO_LEFT: Final = frozenset({"he", "yi", "ar", "fa", "ur", "ps", "sd"})


def is_right_to_left(code: str) -> bool:
    """Whether a language (any name or code ``normalize_language`` accepts) is written RTL."""
    try:
        return normalize_language(code) in RIGHT_TO_LEFT
    except UnknownLanguageError:
        return False
