"""Errors raised by the grammar engine.

Every error caused by a user's grammar, tokenizer or request derives from
:class:`decodekit.errors.UserError`, so the command line prints it as one line.
"""

from __future__ import annotations

from decodekit.errors import UserError


class GrammarError(UserError):
    """A grammar cannot be compiled or used (base class of the grammar errors)."""


class GrammarSyntaxError(GrammarError):
    """A lark grammar does not parse, or refers to something undefined.

    Parameters
    ----------
    message
        What is wrong.
    line, column
        1-based position in the grammar text, when known.
    """

    def __init__(self, message: str, line: int | None = None, column: int | None = None) -> None:
        self.message = message
        self.line = line
        self.column = column
        where = ""
        if line is not None:
            where = f"grammar line {line}" + (f", column {column}" if column is not None else "") + ": "
        super().__init__(where + message)


class GrammarNotLALRError(GrammarError):
    """The grammar has LALR(1) conflicts: lark could only parse it with its Earley parser,
    which a token-mask engine cannot drive incrementally."""


class UnsupportedTerminalError(GrammarError):
    """A terminal uses a regular-expression feature that cannot become a finite automaton
    (look-behind, back-references, ...)."""


class VocabularyError(GrammarError):
    """The token bytes of a tokenizer cannot be determined exactly."""


class VocabularyMismatchError(GrammarError):
    """A grammar compiled for one vocabulary is used with a model of another."""


class GrammarDeadEndError(GrammarError):
    """No token of the vocabulary can continue the text at some position.

    Parameters
    ----------
    message
        What happened, naming the row and the position.
    position
        Number of tokens the matcher had accepted.
    """

    def __init__(self, message: str, position: int) -> None:
        self.position = position
        super().__init__(message)


def locate(text: str, needle: str) -> tuple[int | None, int | None]:
    """1-based line and column of the first whole-word occurrence of ``needle`` in a grammar
    text outside its first definition, or of any occurrence; ``(None, None)`` if absent."""
    import re

    hits = [m.start() for m in re.finditer(r"(?<![\w.])" + re.escape(needle) + r"(?!\w)", text)]
    if not hits:
        return None, None
    # prefer a use over a definition ("name:" at the start of a line)
    for pos in hits:
        line_start = text.rfind("\n", 0, pos) + 1
        after = text[pos + len(needle):].lstrip(" \t")
        if not (pos == line_start and after.startswith(":")):
            break
    else:
        pos = hits[0]
    line = text.count("\n", 0, pos) + 1
    column = pos - (text.rfind("\n", 0, pos) + 1) + 1
    return line, column


def syntax_error(text: str, message: str) -> GrammarSyntaxError:
    """A :class:`GrammarSyntaxError` for a lark message without a position: the first quoted
    name in the message is located in the grammar text."""
    import re

    line = column = None
    m = re.search(r"'([^']+)'", message)
    if m:
        line, column = locate(text, m.group(1))
    return GrammarSyntaxError(message.strip().split("\n")[0], line, column)
