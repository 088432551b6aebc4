"""Showing user-chosen names (token names) where we speak: emails, command output.

A name is a label its owner (or an administrator) chose, not a message from us. New
names are plain (``validation.clean_name``), but rows named before that rule may hold
anything: line breaks that start a line of their own in an email, bidi overrides that
reorder what a reader sees, escape sequences for a terminal, quotes that end the
quotation early, a URL that reads as a link to follow. :func:`label` makes any name
safe to show on one line, and :func:`quoted` wraps it in quotes it cannot leave. Pure
Python, no Django.
"""

import unicodedata

#: Shown instead of each character that could change how the text around it reads.
REPLACEMENT = "\N{REPLACEMENT CHARACTER}"
#: Every character that can pass for a double quote: inside the quotes they become ``'``.
DOUBLE_QUOTES = frozenset(
    '"\u00ab\u00bb\u2039\u203a\u201c\u201d\u201e\u201f\u2033\u2036\u301d\u301e\u301f\uff02'
)
#: The quotes :func:`quoted` puts around a label (no label can contain them).
OPEN_QUOTE, CLOSE_QUOTE = "\u201c", "\u201d"
#: Longer legacy names are cut (the model allows 100 characters, SQLite does not enforce it).
MAX_LABEL_LENGTH = 100


def _neutral(char: str) -> str:
    category = unicodedata.category(char)
    # C*: controls, formats (bidi, zero-width), surrogates, private use, unassigned;
    # Zl/Zp: the Unicode line and paragraph separators.
    if category.startswith("C") or category in ("Zl", "Zp"):
        return REPLACEMENT
    if char in DOUBLE_QUOTES:
        return "'"
    return char


def label(name: str) -> str:
    """Return *name* fit to show on one line inside quotes: nothing in it acts on the text.

    Control and format characters (and line or paragraph separators) become U+FFFD,
    double quotes of every kind become ``'``, ``://`` becomes ``[:]//`` (so a URL in a
    legacy name is not turned into a link by mail readers), and a name longer than
    ``MAX_LABEL_LENGTH`` is cut with an ellipsis. A plain name comes back unchanged.
    """
    text = "".join(_neutral(char) for char in str(name)).replace("://", "[:]//")
    if len(text) > MAX_LABEL_LENGTH:
        text = text[: MAX_LABEL_LENGTH - 1] + "\N{HORIZONTAL ELLIPSIS}"
    return text


def quoted(name: str) -> str:
    """Return ``“label”``: the name as a quotation it cannot break out of."""
    return f"{OPEN_QUOTE}{label(name)}{CLOSE_QUOTE}"
