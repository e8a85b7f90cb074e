"""The 92 languages Qwen-MT translates between (its documentation's list): each by the English name
Qwen-MT's ``source_lang`` / ``target_lang`` take, its code (ISO 639-1 where there is one, else 639-3;
``zh_tw`` for Traditional Chinese, as Qwen-MT writes it) and the aliases users write instead (other codes,
BCP 47 tags, other names). ``find`` reads any of them, case and ``-``/``_`` aside."""

from __future__ import annotations

import functools
from dataclasses import dataclass


@dataclass(frozen=True)
class Language:
    name: str  # as Qwen-MT's API spells it
    code: str
    aliases: tuple[str, ...] = ()


LANGUAGES: tuple[Language, ...] = (
    Language("English", "en", ("eng", "en_us", "en_gb")),
    Language("Chinese", "zh", ("zho", "zh_cn", "zh_hans", "cmn", "simplified chinese", "mandarin")),
    Language("Traditional Chinese", "zh_tw", ("zh_hant", "zh_hk", "chinese traditional")),
    Language("Russian", "ru", ("rus",)),
    Language("Japanese", "ja", ("jpn",)),
    Language("Korean", "ko", ("kor",)),
    Language("Spanish", "es", ("spa", "castilian")),
    Language("French", "fr", ("fra", "fre")),
    Language("Portuguese", "pt", ("por", "pt_br", "pt_pt")),
    Language("German", "de", ("deu", "ger")),
    Language("Italian", "it", ("ita",)),
    Language("Thai", "th", ("tha",)),
    Language("Vietnamese", "vi", ("vie",)),
    Language("Indonesian", "id", ("ind", "in")),
    Language("Malay", "ms", ("msa", "zsm")),
    Language("Arabic", "ar", ("ara", "arb", "modern standard arabic")),
    Language("Hindi", "hi", ("hin",)),
    Language("Hebrew", "he", ("heb", "iw")),
    Language("Burmese", "my", ("mya", "myanmar")),
    Language("Tamil", "ta", ("tam",)),
    Language("Urdu", "ur", ("urd",)),
    Language("Bengali", "bn", ("ben", "bangla")),
    Language("Polish", "pl", ("pol",)),
    Language("Dutch", "nl", ("nld", "dut", "flemish")),
    Language("Romanian", "ro", ("ron", "rum", "moldovan")),
    Language("Turkish", "tr", ("tur",)),
    Language("Khmer", "km", ("khm", "central khmer")),
    Language("Lao", "lo", ()),
    Language("Cantonese", "yue", ("zh_yue",)),
    Language("Czech", "cs", ("ces", "cze")),
    Language("Greek", "el", ("ell", "gre")),
    Language("Swedish", "sv", ("swe",)),
    Language("Hungarian", "hu", ("hun",)),
    Language("Danish", "da", ("dan",)),
    Language("Finnish", "fi", ("fin",)),
    Language("Ukrainian", "uk", ("ukr",)),
    Language("Bulgarian", "bg", ("bul",)),
    Language("Serbian", "sr", ("srp",)),
    Language("Telugu", "te", ("tel",)),
    Language("Afrikaans", "af", ("afr",)),
    Language("Armenian", "hy", ("hye", "arm")),
    Language("Assamese", "as", ("asm",)),
    Language("Asturian", "ast", ()),
    Language("Basque", "eu", ("eus", "baq")),
    Language("Belarusian", "be", ("bel",)),
    Language("Bosnian", "bs", ("bos",)),
    Language("Catalan", "ca", ("cat", "valencian")),
    Language("Cebuano", "ceb", ()),
    Language("Croatian", "hr", ("hrv",)),
    Language("Egyptian Arabic", "arz", ("ar_eg",)),
    Language("Estonian", "et", ("est",)),
    Language("Galician", "gl", ("glg",)),
    Language("Georgian", "ka", ("kat", "geo")),
    Language("Gujarati", "gu", ("guj",)),
    Language("Icelandic", "is", ("isl", "ice")),
    Language("Javanese", "jv", ("jav", "jw")),
    Language("Kannada", "kn", ("kan",)),
    Language("Kazakh", "kk", ("kaz",)),
    Language("Latvian", "lv", ("lav", "lvs")),
    Language("Lithuanian", "lt", ("lit",)),
    Language("Luxembourgish", "lb", ("ltz", "letzeburgesch")),
    Language("Macedonian", "mk", ("mkd", "mac")),
    Language("Maithili", "mai", ()),
    Language("Maltese", "mt", ("mlt",)),
    Language("Marathi", "mr", ("mar",)),
    Language("Mesopotamian Arabic", "acm", ("iraqi arabic", "ar_iq")),
    Language("Moroccan Arabic", "ary", ("darija", "ar_ma")),
    Language("Najdi Arabic", "ars", ("ar_sa",)),
    Language("Nepali", "ne", ("nep", "npi")),
    Language("North Azerbaijani", "az", ("aze", "azj", "azerbaijani")),
    Language("North Levantine Arabic", "apc", ("levantine arabic",)),
    Language("Northern Uzbek", "uz", ("uzb", "uzn", "uzbek")),
    Language("Norwegian Bokmål", "nb", ("nob", "no", "nor", "norwegian", "norwegian bokmal", "bokmal")),
    Language("Norwegian Nynorsk", "nn", ("nno", "nynorsk")),
    Language("Occitan", "oc", ("oci",)),
    Language("Odia", "or", ("ory", "oriya")),
    Language("Pangasinan", "pag", ()),
    Language("Sicilian", "scn", ()),
    Language("Sindhi", "sd", ("snd",)),
    Language("Sinhala", "si", ("sin", "sinhalese")),
    Language("Slovak", "sk", ("slk", "slo")),
    Language("Slovenian", "sl", ("slv", "slovene")),
    Language("South Levantine Arabic", "ajp", ()),
    Language("Swahili", "sw", ("swa", "swh")),
    Language("Tagalog", "tl", ("tgl", "fil", "filipino")),
    Language("Ta'izzi-Adeni Arabic", "acq", ()),
    Language("Tosk Albanian", "sq", ("sqi", "alb", "als", "albanian")),
    Language("Tunisian Arabic", "aeb", ("ar_tn",)),
    Language("Venetian", "vec", ()),
    Language("Waray", "war", ("waray-waray",)),
    Language("Welsh", "cy", ("cym", "wel")),
    Language("Western Persian", "fa", ("fas", "per", "pes", "persian", "farsi")),
)


def _key(text: str) -> str:
    return " ".join(text.strip().lower().replace("-", "_").split())


@functools.cache
def _index() -> dict[str, Language]:
    index: dict[str, Language] = {}
    for language in LANGUAGES:
        for key in (language.name, language.code, *language.aliases):
            assert _key(key) not in index, key  # one meaning per name
            index[_key(key)] = language
    return index


def find(text: str) -> Language | None:
    """The language ``text`` names (a name, a code or an alias), or ``None``."""
    return _index().get(_key(text))


def supported() -> str:
    """Every language, for an error message: ``English (en), Chinese (zh), …``."""
    return ", ".join(f"{language.name} ({language.code})" for language in LANGUAGES)
