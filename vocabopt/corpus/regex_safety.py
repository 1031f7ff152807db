"""Regex analysis: may the "chunks" path cut a text before a space where a Split pre-tokenizer's regex splits it?

Job: decide, from a Split pre-tokenizer's regex alone, whether cutting a text at every point p before a space that
follows a non-whitespace character (the chunk path's cut) leaves its pre-tokens unchanged; and the same for a cut
before a newline, or a punctuation character, that follows a letter or digit. Inputs: the regex string (the
Oniguruma syntax the tokenizers library uses: Unicode classes, (?i:...) groups, lookahead). Outputs:
`split_safety(pattern)`, `newline_safety(pattern)` and `punctuation_safety(pattern, char)` -> (respects, cuts,
reason).

Why these conditions suffice (leftmost-first matching, behaviour "Isolated"), for the space:
- `respects`: no match can contain a non-whitespace character followed by a space (so none spans p); no match is
  empty; no anchor, lookbehind or backreference (matching from p does not depend on what lies before it); the only
  lookaround is a negative lookahead of one character class that cannot match a space (at p it sees " " in the
  text and the end in the chunk, and both make it succeed). Then the matches tried at every position are the same
  in the text and in its chunks, and so are the pieces, except that a run of unmatched text spanning p is one piece
  in the text and two in the chunks.
- `cuts`: some alternative matches a lone space whatever follows it, so a match starts at p and no unmatched run
  spans p.
The newline's conditions read the same with the newline for the space and "a letter or digit" for "a
non-whitespace character". Each character position is tracked as the classes of characters it may hold (letters,
numbers, other non-whitespace, the space, the newline, other whitespace), and a match's facts as the pairs of
classes that may follow each other inside it. A Split that respects p but does not cut there (GPT-2-free digit
splitters) is still safe inside a Sequence once a later member cuts. Conservative throughout: any construct this
parser does not know makes the regex unsafe.
"""

from __future__ import annotations

import functools
import unicodedata
from dataclasses import dataclass

# The classes of characters the analysis tells apart: letters, numbers, other non-whitespace; the space, the
# newline, other whitespace; and Q, the one punctuation character a `punctuation_safety` run studies (that run
# holds it in Q alone, never in P).
L, N, P, SPACE, NL, WS, Q = "L", "N", "P", " ", "\n", "ws", "Q"
ALL = frozenset({L, N, P, SPACE, NL, WS, Q})
NONWS = frozenset({L, N, P, Q})
SINGLES = (SPACE, NL, Q)  # the classes of one character each: a position may surely match them
# Unicode general categories and scripts: the classes they may hold, and those they hold all of (for negation).
_CATEGORY_CLASSES: dict[str, tuple[frozenset, frozenset]] = {
    **{c: (frozenset({L}), frozenset()) for c in ("Lu", "Ll", "Lt", "Lm", "Lo")},
    **{c: (frozenset({N}), frozenset()) for c in ("Nd", "Nl", "No")},
    "L": (frozenset({L}), frozenset({L})),
    "N": (frozenset({N}), frozenset({N})),
    **{c: (frozenset({P}), frozenset()) for c in ("M", "Mn", "Mc", "Me", "P", "Pc", "Pd", "Ps", "Pe", "Pi", "Pf")},
    **{c: (frozenset({P}), frozenset()) for c in ("Po", "S", "Sm", "Sc", "Sk", "So", "Cf", "Cs", "Co", "Cn")},
    "C": (frozenset({P, NL, WS}), frozenset({NL})),  # Cc: the ASCII controls, \t \n \r among them
    "Cc": (frozenset({P, NL, WS}), frozenset({NL})),
    "Z": (frozenset({SPACE, WS}), frozenset({SPACE})),
    "Zs": (frozenset({SPACE, WS}), frozenset({SPACE})),
    "Zl": (frozenset({WS}), frozenset()),
    "Zp": (frozenset({WS}), frozenset()),
    **{
        script: (NONWS, frozenset())
        for script in (
            "Han",
            "Hiragana",
            "Katakana",
            "Latin",
            "Greek",
            "Cyrillic",
            "Arabic",
            "Hebrew",
            "Hangul",
            "Thai",
        )
    },
}


class Unsafe(Exception):
    """A construct the analysis does not accept (the message says which)."""


@dataclass(frozen=True)
class CharSet:
    """What one character position may hold: the classes it may hold (`may`), the space and newline it surely
    matches (`sure`), and the classes it holds every character of (`full`, for negated classes)."""

    may: frozenset
    sure: frozenset = frozenset()
    full: frozenset = frozenset()


@dataclass(frozen=True)
class Node:
    """The facts of a sub-expression the analysis needs (over-approximated, except `lone`)."""

    first: frozenset  # the classes a match may start with
    last: frozenset  # ... and end with
    nullable: bool  # may match the empty string
    pairs: frozenset  # (class, class) of two characters that may follow each other inside a match
    lone: frozenset  # of the space and the newline: those it surely can match alone, whatever follows
    lookahead: bool = False  # holds a lookahead
    zero_width: bool = False  # is a lookahead
    ahead: frozenset = frozenset()  # the classes its lookaheads' characters may hold
    possessive: bool = False  # holds a possessive quantifier (no backtracking: "\n*+\n" never matches "\n")
    # (class, class): a lookahead after a character of the first class may see one of the second; a lookahead with
    # nothing of its sequence before it is paired with every class (conservative: a group may sit after anything)
    ahead_after: frozenset = frozenset()


_EMPTY = Node(frozenset(), frozenset(), True, frozenset(), frozenset())


def _char(cs: CharSet) -> Node:
    return Node(cs.may, cs.may, False, frozenset(), cs.sure)


def _concat(items: list[Node]) -> Node:
    out, ahead_after = _EMPTY, frozenset().union(*(n.ahead_after for n in items))
    for n in items:
        if n.zero_width:  # a lookahead matches nothing (its classes are checked by the verdicts)
            before = ALL if out.nullable else out.last
            ahead_after |= {(a, b) for a in before for b in n.ahead}
            continue
        pairs = out.pairs | n.pairs | {(a, b) for a in out.last for b in n.first}
        first = out.first | (n.first if out.nullable else frozenset())
        last = n.last | (out.last if n.nullable else frozenset())
        out = Node(first, last, out.nullable and n.nullable, frozenset(pairs), frozenset())
    lookahead = any(n.lookahead or n.zero_width for n in items)
    possessive = any(n.possessive for n in items)
    # one item matches the character alone and all the others may match nothing (and do: no possessive)
    lone = frozenset(
        c
        for c in SINGLES
        if not (lookahead or possessive)
        and any(c in n.lone and all(m.nullable for m in items if m is not n) for n in items)
    )
    ahead = frozenset().union(*(n.ahead for n in items))
    return Node(out.first, out.last, out.nullable, out.pairs, lone, lookahead, False, ahead, possessive, ahead_after)


def _alternation(nodes: list[Node]) -> Node:
    return Node(
        frozenset().union(*(n.first for n in nodes)),
        frozenset().union(*(n.last for n in nodes)),
        any(n.nullable for n in nodes),
        frozenset().union(*(n.pairs for n in nodes)),
        frozenset().union(*(n.lone for n in nodes)),
        any(n.lookahead for n in nodes),
        False,
        frozenset().union(*(n.ahead for n in nodes)),
        any(n.possessive for n in nodes),
        frozenset().union(*(n.ahead_after for n in nodes)),
    )


def _repeat(n: Node, lo: int, hi: int | None, possessive: bool = False) -> Node:
    if n.zero_width:
        raise Unsafe("a quantified lookahead")
    many = hi is None or hi > 1
    pairs = n.pairs | ({(a, b) for a in n.last for b in n.first} if many else frozenset())
    lone = n.lone if lo <= 1 and (hi is None or hi >= 1) and not possessive else frozenset()
    possessive = possessive or n.possessive
    nullable, ahead_after = n.nullable or lo == 0, n.ahead_after
    return Node(n.first, n.last, nullable, frozenset(pairs), lone, n.lookahead, False, n.ahead, possessive, ahead_after)


class _Parser:
    """A recursive-descent parser of the regex subset tokenizers' pre-tokenizers use."""

    def __init__(self, pattern: str, cut: str | None = None) -> None:
        self.s, self.i, self.cut = pattern, 0, cut  # cut: the character held in class Q

    def peek(self, k: int = 0) -> str:
        return self.s[self.i + k] if self.i + k < len(self.s) else ""

    def take(self, text: str) -> bool:
        if self.s.startswith(text, self.i):
            self.i += len(text)
            return True
        return False

    def alternation(self) -> tuple[Node, list[Node]]:
        branches = [self.sequence()]
        while self.take("|"):
            branches.append(self.sequence())
        return _alternation(branches), branches

    def sequence(self) -> Node:
        items: list[Node] = []
        while self.peek() not in ("", "|", ")"):
            items.append(self.quantified(self.atom()))
        return _concat(items)

    def quantified(self, node: Node) -> Node:
        c = self.peek()
        if c and c in "?*+":
            self.i += 1
            lo, hi = {"?": (0, 1), "*": (0, None), "+": (1, None)}[c]
        elif c == "{" and self._brace():
            lo, hi = self._brace()  # type: ignore[misc]
            self.i = self.s.index("}", self.i) + 1
            if self.peek() and self.peek() in "?*+{":  # Oniguruma nests it ("a{1}+" is "(a{1})+"), not lazy/possessive
                raise Unsafe(f"a quantifier after {{...}} at {self.i}")
            return _repeat(node, lo, hi)
        else:
            return node
        self.take("?")  # lazy: the same matches, in another order
        possessive = self.take("+")  # the same language, but no backtracking: "\n*+\n" never matches "\n" alone
        return _repeat(node, lo, hi, possessive)

    def _brace(self) -> tuple[int, int | None] | None:
        end = self.s.find("}", self.i)
        body = self.s[self.i + 1 : end] if end > 0 else ""
        parts = body.split(",")
        digits = str.isdecimal if body.isascii() else lambda _: False  # ASCII digits only: int() of "²" fails
        if not body or len(parts) > 2 or not all(digits(p) or (p == "" and k) for k, p in enumerate(parts)):
            if body.startswith(",") and digits(body[1:]):
                return 0, int(body[1:])
            return None
        lo = int(parts[0])
        return lo, (lo if len(parts) == 1 else (int(parts[1]) if parts[1] else None))

    def atom(self) -> Node:
        c = self.peek()
        if c == "(":
            return self.group()
        if c == "[":
            return _char(self.char_class())
        if c == ".":
            self.i += 1
            return _char(CharSet(ALL, frozenset({SPACE, Q})))
        if c == "\\":
            return _char(self.escape(in_class=False))
        if c in "^$":
            raise Unsafe(f"anchor {c!r}")
        if c in "*+?{" and not (c == "{" and self._brace() is None):
            raise Unsafe(f"quantifier {c!r} with nothing before it")
        self.i += 1
        return _char(self.literal(c))

    def group(self) -> Node:
        self.i += 1
        if self.take("?"):
            if self.take(":"):
                pass
            elif self.take("!"):
                return self.lookahead()
            elif self.peek() in ("=", "<", ">", "#", "P") or self.peek() == "(":
                raise Unsafe(f"group (?{self.peek()}...")
            else:
                flags = ""
                while self.peek().isalpha() or self.peek() == "-":
                    flags += self.peek()
                    self.i += 1
                if set(flags) - {"i"}:
                    raise Unsafe(f"inline flags (?{flags}...)")
                if self.take(")"):
                    return _EMPTY  # (?i): case does not change what is whitespace
                if not self.take(":"):
                    raise Unsafe("malformed group")
        node, _ = self.alternation()
        if not self.take(")"):
            raise Unsafe("unbalanced parenthesis")
        return node

    def lookahead(self) -> Node:
        """(?!C): only one character class (see the module docstring; the verdicts check what it may hold)."""
        start = self.i
        cs = self.char_class() if self.peek() == "[" else self.escape(in_class=False) if self.peek() == "\\" else None
        if cs is None or not self.take(")"):
            raise Unsafe(f"lookahead (?!{self.s[start : self.i]}...) other than one class")
        return Node(frozenset(), frozenset(), True, frozenset(), frozenset(), False, True, cs.may)

    def char_class(self) -> CharSet:
        self.i += 1
        negated = self.take("^")
        members: list[CharSet] = []
        first = True
        while True:
            c = self.peek()
            if c == "":
                raise Unsafe("unterminated character class")
            if c == "]" and not first:
                self.i += 1
                break
            if c == "[" or self.s.startswith("&&", self.i):
                raise Unsafe("nested class or class intersection")
            first = False
            if c == "\\":
                member, lo = self.escape(in_class=True), None
            else:
                lo = self._next()
                member = self.literal(lo)
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                if lo is None or self.peek() == "\\":
                    raise Unsafe("a range with an escaped bound")
                member = self.range(lo, self._next())
            members.append(member)
        may = frozenset().union(*(m.may for m in members))
        if negated:  # every class but those its members hold all of; surely the single ones none may hold
            return CharSet(ALL - frozenset().union(*(m.full for m in members)), frozenset(SINGLES) - may, ALL - may)
        sure = frozenset().union(*(m.sure for m in members))
        return CharSet(may, sure, frozenset().union(*(m.full for m in members)))

    def _next(self) -> str:
        c = self.peek()
        self.i += 1
        return c

    def escape(self, in_class: bool) -> CharSet:
        self.i += 1
        c = self._next()
        if c in "pP":
            name = self._property()
            may, full = _CATEGORY_CLASSES.get(name, (ALL, frozenset()))  # scripts, unknown names: Q in may
            if self.cut is not None and name in _categories(self.cut):  # Q is one character: holding it, all of Q
                may, full = may | {Q}, full | {Q}
            if c == "P":  # every class it does not hold all of
                return CharSet(ALL - full, frozenset(SINGLES) - may, ALL - may)
            return CharSet(may, frozenset(SINGLES) & full, full)
        ws = frozenset({SPACE, NL, WS})
        word = NONWS if self.cut == "_" else frozenset({L, N, P})  # \w: letters, marks, digits, connectors ("_")
        table = {
            "s": CharSet(ws, frozenset({SPACE, NL}), ws), "S": CharSet(NONWS, frozenset({Q}), NONWS),
            "d": CharSet(frozenset({N})), "D": CharSet(ALL, frozenset(SINGLES), ALL - {N}),
            "w": CharSet(word, frozenset(), frozenset({L})), "W": CharSet(ALL - {L}, frozenset(SINGLES) - word, ws),
            "r": CharSet(frozenset({WS})), "n": CharSet(frozenset({NL}), frozenset({NL}), frozenset({NL})),
            "t": CharSet(frozenset({WS})), "f": CharSet(frozenset({WS})), "v": CharSet(frozenset({WS})),
        }  # fmt: skip
        if c in table:
            return table[c]
        if c in ("b", "B", "A", "z", "Z", "G") and not in_class:
            raise Unsafe(f"anchor \\{c}")
        if c.isdigit() or c.isalpha() or c == "":
            raise Unsafe(f"escape \\{c}")
        return self.literal(c)  # an escaped punctuation character stands for itself

    def class_of(self, c: str) -> str:
        return Q if c == self.cut else _class_of(c)

    def literal(self, c: str) -> CharSet:
        single = frozenset({self.class_of(c)}) & set(SINGLES)
        return CharSet(frozenset({self.class_of(c)}), single, single)

    def range(self, lo: str, hi: str) -> CharSet:
        if ord(lo) > ord(hi):
            raise Unsafe(f"range {lo}-{hi}")
        holds = [c for c in (SPACE, NL, self.cut) if c is not None and ord(lo) <= ord(c) <= ord(hi)]
        single = frozenset(map(self.class_of, holds))
        if ord(hi) - ord(lo) >= 0x10000:  # not worth enumerating
            return CharSet(frozenset({L, N, P, WS}) | single, single, single)
        chars = map(chr, range(ord(lo), ord(hi) + 1))
        return CharSet(frozenset(map(self.class_of, chars)), single, single)

    def _property(self) -> str:
        if self.take("{"):
            end = self.s.find("}", self.i)
            if end < 0:
                raise Unsafe("unterminated \\p{")
            name, self.i = self.s[self.i : end], end + 1
        else:
            name = self._next()
        if name.startswith("^"):
            raise Unsafe(f"negated property \\p{{{name}}}")
        return name.removeprefix("Is").removeprefix("General_Category=")


def _class_of(c: str) -> str:
    if c in (SPACE, NL):
        return c
    if c.isspace():
        return WS
    category = unicodedata.category(c)
    return L if category[0] == "L" else N if category[0] == "N" else P


def _categories(c: str) -> tuple[str, str]:
    """The general categories that hold c: its own ("Po") and its major class ("P")."""
    category = unicodedata.category(c)
    return category, category[0]


@functools.lru_cache(maxsize=64)
def split_safety(pattern: str) -> tuple[bool, bool, str]:
    """(respects, cuts, reason) of a Split regex for cuts before a space that follows a non-space: see the module
    docstring. Unknown constructs: (False, False, why)."""
    return _verdict(pattern, NONWS, SPACE, ("a non-space", "space"))


@functools.lru_cache(maxsize=64)
def newline_safety(pattern: str) -> tuple[bool, bool, str]:
    """(respects, cuts, reason) of a Split regex for cuts before a newline that follows a letter or digit (the
    same conditions, with the newline for the space and letters and digits for the non-space before it)."""
    return _verdict(pattern, frozenset({L, N}), NL, ("a letter or digit", "newline"))


@functools.lru_cache(maxsize=64)
def punctuation_safety(pattern: str, char: str) -> tuple[bool, bool, str]:
    """(respects, cuts, reason) of a Split regex for cuts before the punctuation character `char` where it follows a
    letter or digit ("earth," -> "earth", ","): the same conditions, `char` in a class of its own, and a lookahead
    may see it only where the character before cannot be a letter or digit (`\\s+(?!\\S)` sees it after whitespace,
    never at such a cut)."""
    return _verdict(pattern, frozenset({L, N}), Q, ("a letter or digit", repr(char)), cut=char)


def _verdict(
    pattern: str, before: frozenset, char: str, names: tuple[str, str], cut: str | None = None
) -> tuple[bool, bool, str]:
    """(respects, cuts, reason) for cuts before `char` where it follows a character of the classes `before`."""
    parser = _Parser(pattern, cut)
    try:
        node, branches = parser.alternation()
        if parser.i != len(pattern):
            raise Unsafe(f"unexpected {pattern[parser.i]!r} at {parser.i}")
    except Unsafe as e:
        return False, False, str(e)
    first, name = names
    if node.nullable:
        return False, False, "it may match the empty string"
    if (char in node.ahead) if cut is None else any((x, char) in node.ahead_after for x in before):
        return False, False, f"a lookahead may see the {name} after a piece"
    if any((x, char) in node.pairs for x in before):
        return False, False, f"an alternative may match {first} followed by a {name}"
    if any(char in b.lone for b in branches):
        return True, True, f"splits before every {name} that follows {first}"
    return True, False, "never matches across one"
