"""Regex analysis: may the "chunks" path cut a text before a space where a Split pre-tokenizer's regex splits it?

Job: decide, from a Split pre-tokenizer's regex alone, whether cutting a text at every point p before a space that
follows a non-whitespace character (the chunk path's cut) leaves its pre-tokens unchanged. Inputs: the regex
string (the Oniguruma syntax the tokenizers library uses: Unicode classes, (?i:...) groups, lookahead). Outputs:
`split_safety(pattern)` -> (respects, cuts, reason).

Why these conditions suffice (leftmost-first matching, behaviour "Isolated"):
- `respects`: no match can contain a non-whitespace character followed by a space (so none spans p); no match is
  empty; no anchor, lookbehind or backreference (matching from p does not depend on what lies before it); the only
  lookaround is a negative lookahead of one character class that cannot match a space (at p it sees " " in the
  text and the end in the chunk, and both make it succeed). Then the matches tried at every position are the same
  in the text and in its chunks, and so are the pieces, except that a run of unmatched text spanning p is one piece
  in the text and two in the chunks.
- `cuts`: some alternative matches a lone space whatever follows it, so a match starts at p and no unmatched run
  spans p.
A Split that respects p but does not cut there (GPT-2-free digit splitters) is still safe inside a Sequence once a
later member cuts. Conservative throughout: any construct this parser does not know makes the regex unsafe.
"""

from __future__ import annotations

from dataclasses import dataclass

YES, NO, MAYBE = "yes", "no", "maybe"

# Unicode general categories and scripts: do they hold U+0020, and may they hold non-whitespace characters?
# Z (separators) holds the spaces; every other category holds no whitespace but controls (\t, \n in Cc).
_SPACE_CATEGORIES = {"Z", "Zs"}
_NO_SPACE_CATEGORIES = {
    "L", "Lu", "Ll", "Lt", "Lm", "Lo", "M", "Mn", "Mc", "Me", "N", "Nd", "Nl", "No", "P", "Pc", "Pd", "Ps", "Pe",
    "Pi", "Pf", "Po", "S", "Sm", "Sc", "Sk", "So", "C", "Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp",
    "Han", "Hiragana", "Katakana", "Latin", "Greek", "Cyrillic", "Arabic", "Hebrew", "Hangul", "Thai",
}  # fmt: skip


class Unsafe(Exception):
    """A construct the analysis does not accept (the message says which)."""


@dataclass(frozen=True)
class CharSet:
    """What one character position may hold: U+0020 (YES/NO/MAYBE) and a non-whitespace character (bool)."""

    space: str
    nonws: bool


@dataclass(frozen=True)
class Node:
    """The facts of a sub-expression the analysis needs (over-approximated, except `lone_space`)."""

    first: tuple[bool, bool]  # (may start with a non-whitespace character, may start with a space)
    last: tuple[bool, bool]  # (may end with a non-whitespace character, may end with a space)
    nullable: bool  # may match the empty string
    crosses: bool  # may contain a non-whitespace character followed by a space
    lone_space: bool  # surely can match exactly " ", whatever follows (no lookahead inside)
    lookahead: bool = False  # holds a lookahead
    zero_width: bool = False  # is a lookahead


_EMPTY = Node((False, False), (False, False), True, False, False)


def _char(cs: CharSet) -> Node:
    edge = (cs.nonws, cs.space != NO)
    return Node(edge, edge, False, False, cs.space == YES)


def _concat(items: list[Node]) -> Node:
    out = _EMPTY
    for n in items:
        if n.zero_width:
            continue  # a lookahead matches nothing (its class was checked where it was parsed)
        crosses = out.crosses or n.crosses or (out.last[0] and n.first[1])
        first = (out.first[0] or (out.nullable and n.first[0]), out.first[1] or (out.nullable and n.first[1]))
        last = (n.last[0] or (n.nullable and out.last[0]), n.last[1] or (n.nullable and out.last[1]))
        out = Node(first, last, out.nullable and n.nullable, crosses, False)
    lookahead = any(n.lookahead or n.zero_width for n in items)
    # one item matches " " and all the others may match nothing
    lone = not lookahead and any(n.lone_space and all(m.nullable for m in items if m is not n) for n in items)
    return Node(out.first, out.last, out.nullable, out.crosses, lone, lookahead)


def _alternation(nodes: list[Node]) -> Node:
    return Node(
        (any(n.first[0] for n in nodes), any(n.first[1] for n in nodes)),
        (any(n.last[0] for n in nodes), any(n.last[1] for n in nodes)),
        any(n.nullable for n in nodes),
        any(n.crosses for n in nodes),
        any(n.lone_space for n in nodes),
        any(n.lookahead for n in nodes),
    )


def _repeat(n: Node, lo: int, hi: int | None) -> Node:
    if n.zero_width:
        raise Unsafe("a quantified lookahead")
    many = hi is None or hi > 1
    crosses = n.crosses or (many and n.last[0] and n.first[1])
    lone = n.lone_space and lo <= 1 and (hi is None or hi >= 1)
    return Node(n.first, n.last, n.nullable or lo == 0, crosses, lone, n.lookahead)


class _Parser:
    """A recursive-descent parser of the regex subset tokenizers' pre-tokenizers use."""

    def __init__(self, pattern: str) -> None:
        self.s, self.i = pattern, 0

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
        else:
            return node
        self.take("?") or self.take("+")  # lazy or possessive: the same language
        return _repeat(node, lo, hi)

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
            return _char(CharSet(YES, True))
        if c == "\\":
            return _char(self.escape(in_class=False))
        if c in "^$":
            raise Unsafe(f"anchor {c!r}")
        if c in "*+?{" and not (c == "{" and self._brace() is None):
            raise Unsafe(f"quantifier {c!r} with nothing before it")
        self.i += 1
        return _char(_literal(c))

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
        """(?!C): only one character class that cannot match a space (see the module docstring)."""
        start = self.i
        cs = self.char_class() if self.peek() == "[" else self.escape(in_class=False) if self.peek() == "\\" else None
        if cs is None or not self.take(")") or cs.space != NO:
            raise Unsafe(f"lookahead (?!{self.s[start : self.i]}...) other than one class without the space")
        return Node((False, False), (False, False), True, False, False, zero_width=True)

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
                member = _literal(lo)
            if self.peek() == "-" and self.peek(1) not in ("]", ""):
                self.i += 1
                if lo is None or self.peek() == "\\":
                    raise Unsafe("a range with an escaped bound")
                member = _range(lo, self._next())
            members.append(member)
        if negated:  # holds the space unless a member does; non-whitespace unless it is all of them (assume not)
            spaces = {m.space for m in members}
            return CharSet(NO if YES in spaces else (YES if spaces <= {NO} else MAYBE), True)
        spaces = {m.space for m in members}
        space = YES if YES in spaces else (NO if spaces <= {NO} else MAYBE)
        return CharSet(space, any(m.nonws for m in members))

    def _next(self) -> str:
        c = self.peek()
        self.i += 1
        return c

    def escape(self, in_class: bool) -> CharSet:
        self.i += 1
        c = self._next()
        if c in "pP":
            name = self._property()
            space = YES if name in _SPACE_CATEGORIES else NO if name in _NO_SPACE_CATEGORIES else MAYBE
            if c == "P":
                space = {YES: NO, NO: YES, MAYBE: MAYBE}[space]
            return CharSet(space, c == "P" or name not in _SPACE_CATEGORIES)
        table = {
            "s": CharSet(YES, False), "S": CharSet(NO, True), "d": CharSet(NO, True), "D": CharSet(YES, True),
            "w": CharSet(NO, True), "W": CharSet(YES, True), "r": CharSet(NO, False), "n": CharSet(NO, False),
            "t": CharSet(NO, False), "f": CharSet(NO, False), "v": CharSet(NO, False),
        }  # fmt: skip
        if c in table:
            return table[c]
        if c in ("b", "B", "A", "z", "Z", "G") and not in_class:
            raise Unsafe(f"anchor \\{c}")
        if c.isdigit() or c.isalpha() or c == "":
            raise Unsafe(f"escape \\{c}")
        return _literal(c)  # an escaped punctuation character stands for itself

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


def _literal(c: str) -> CharSet:
    return CharSet(YES if c == " " else NO, not c.isspace())


def _range(lo: str, hi: str) -> CharSet:
    if ord(lo) > ord(hi):
        raise Unsafe(f"range {lo}-{hi}")
    space = YES if ord(lo) <= 0x20 <= ord(hi) else NO
    nonws = any(not chr(k).isspace() for k in range(ord(lo), min(ord(hi), ord(lo) + 64) + 1)) or ord(hi) > ord(lo) + 64
    return CharSet(space, nonws)


def split_safety(pattern: str) -> tuple[bool, bool, str]:
    """(respects, cuts, reason) of a Split regex: see the module docstring. Unknown constructs: (False, False, why)."""
    parser = _Parser(pattern)
    try:
        node, branches = parser.alternation()
        if parser.i != len(pattern):
            raise Unsafe(f"unexpected {pattern[parser.i]!r} at {parser.i}")
    except Unsafe as e:
        return False, False, str(e)
    if node.nullable:
        return False, False, "it may match the empty string"
    if node.crosses:
        return False, False, "an alternative may match a non-space followed by a space"
    cuts = any(b.lone_space for b in branches)
    return True, cuts, "splits before every space that follows a non-space" if cuts else "never matches across one"
