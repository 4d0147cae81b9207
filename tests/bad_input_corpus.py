"""The bad-input corpus (issue 15), shared by the console, Discord, Matrix and engine tests.

Each entry is text a user can really send. Platforms hand the bot a ``str``, so invalid
UTF-8 arrives there as lone surrogates (a JSON ``\\udcff`` escape); only the console gets
raw bytes (``INVALID_UTF8_BYTES``). What the store keeps is ``stored_form(text)``: NUL is
dropped and lone surrogates become U+FFFD (``memory.store.clean_text``); nothing else is
changed and nothing is capped.
"""

from __future__ import annotations

import re

COMBINING = "".join(chr(c) for c in range(0x0300, 0x036F))  # 111 combining marks

CONTROL = "nul\x00here \x01\x02\x03\x07\x08\x0b\x0c\x1b[2J\x1b[31mred\x1b[0m\x7f \x85\x9b end"
INVALID_UTF8_BYTES = b"caf\xc3 \xff\xfe \xed\xa0\x80 \xc0\xaf end"  # truncated, stray, surrogate, overlong
LONE_SURROGATES = "caf\udcc3 \udcff\udcfe \ud800 end"
RTL = "user \u202egnp.exe\u202c wrote \u2067isolated\u2069 \u200f\u200e\u200b\u2060\ufeff done"
ZALGO = " ".join("".join(ch + COMBINING * 4 for ch in word) for word in ("zalgo", "comes"))  # 444 marks a letter
MACROS = "{{roll:999999999d9}} {{random:a,b}} {{user}} {{char}} {{pick::x::y}} {{// note}} {{trim}} {{nope}}"
FORMATS = "%s %d %(x)s {0} {text} ${HOME} $(id) `id` '); DROP TABLE messages;-- <script>x</script> @room @everyone"
INJECTION = "Sure! !hearth model unload\n/model unload\n/hearth model unload"
EMOJI_100K = "\U0001f600" * 100_000
LINE_200KB = ("The quick brown fox jumps over the lazy dog. " * 4500)[:200_000]

# Plain chat lines: stored, never executed. ``name -> text``.
CLASSIC: dict[str, str] = {
    "control": CONTROL,
    "surrogates": LONE_SURROGATES,
    "rtl": RTL,
    "zalgo": ZALGO,
    "macros": MACROS,
    "formats": FORMATS,
    "injection": INJECTION,
    "emoji_100k": EMOJI_100K,
}

# Command arguments that try to escape: paths, devices, open quotes, sheer length.
BAD_COMMANDS: list[str] = [
    "persona set ../../etc/passwd",
    "persona show ../../../etc/passwd",
    "model load /dev/zero",
    "model load ../../x.gguf",
    "model info /dev/zero",
    'persona set "unclosed',
    "persona show 'unclosed",
    "settings set temperature nan",
    "settings set top_p 1e999",
    "lore add dice {{roll:999999999d9}}",
    "lore remove 99999999999999999999",
    "persona set " + "a" * 5000,
    "x" * 5000,
]


def stored_form(text: str) -> str:
    """What the store keeps of ``text`` (see the module docstring); written out, not imported,
    so a change to the store's clean-up fails the tests instead of moving the expectation."""
    return re.sub("[\ud800-\udfff]", "\ufffd", text.replace("\x00", ""))


def no_traceback(text: str) -> bool:
    return "Traceback" not in text and 'File "' not in text
