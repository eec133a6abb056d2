"""Rewrites Jython 2.7 / Python 2 handler scripts so they compile as Python 3.

secsgate calls `rewrite(source)` only after a script failed to compile as Python 3. The rewrite
works on tokens, never on text inside strings or comments, and never adds or removes lines, so
tracebacks keep pointing at the engineer's own line numbers. It handles:

    print x, y          -> print(x, y)
    print x,            -> print(x, end=" ")
    print >>f, x        -> print(x, file=f)
    print               -> print()
    exec code           -> exec(code)
    except E, e:        -> except E as e:
    raise E, "message"  -> raise E("message")
    a <> b              -> a != b
    10L                 -> 10
    0777                -> 0o777
    ur"text"            -> r"text"

Runtime shims (xrange, unicode, basestring, long, unichr, raw_input) are added to the
handlers' builtins by `shims()`.
"""

import io
import re
import tokenize

_STATEMENT_START = {tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.NL, tokenize.ENCODING}


def _tokens(source):
    return list(tokenize.generate_tokens(io.StringIO(source).readline))


def _statement_end(toks, i):
    """Index of the token that ends the simple statement starting at toks[i]."""
    depth = 0
    while i < len(toks):
        t = toks[i]
        if t.type == tokenize.OP and t.string in "([{":
            depth += 1
        elif t.type == tokenize.OP and t.string in ")]}":
            depth -= 1
        elif depth <= 0 and (t.type in (tokenize.NEWLINE, tokenize.COMMENT, tokenize.ENDMARKER) or (t.type == tokenize.OP and t.string == ";")):
            return i
        i += 1
    return len(toks) - 1


def _top_level_commas(toks, start, end):
    depth = 0
    found = []
    for j in range(start, end):
        t = toks[j]
        if t.type == tokenize.OP and t.string in "([{":
            depth += 1
        elif t.type == tokenize.OP and t.string in ")]}":
            depth -= 1
        elif depth == 0 and t.type == tokenize.OP and t.string == ",":
            found.append(j)
    return found


def rewrite(source):
    """Returns the source rewritten for Python 3 (the same text if nothing needed changing)."""
    try:
        toks = _tokens(source)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        return source
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def at(pos):
        """Absolute offset of a (row, col) token position."""
        row, col = pos
        return starts[row - 1] + col if row - 1 < len(starts) else len(source)

    # Edits: (start, end, replacement) as absolute offsets, applied right to left.
    edits = []

    def text(a, b):
        """Source text from the start of token a to the start of token b."""
        return source[at(toks[a].start):at(toks[b].start)]

    def stmt_end_offset(end):
        """Offset just after the last non-blank character before token `end`."""
        return len(source[: at(toks[end].start)].rstrip())

    def statement_start(i):
        if i == 0:
            return True
        prev = toks[i - 1]
        return prev.type in _STATEMENT_START or (prev.type == tokenize.OP and prev.string in (":", ";"))

    for i, t in enumerate(toks):
        if t.type == tokenize.NAME and t.string in ("print", "exec") and statement_start(i):
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            if nxt is None or (nxt.type == tokenize.OP and nxt.string in ("(", "=", ".", "[")):
                # Already a call (or a parenthesised tuple, printed the same way), or a name.
                continue
            end = _statement_end(toks, i + 1)
            args = text(i + 1, end).rstrip() if end > i + 1 else ""
            stripped = args.rstrip()
            if t.string == "exec":
                new = "exec(%s)" % stripped
            else:
                target = None
                if stripped.startswith(">>"):
                    commas = _top_level_commas(toks, i + 1, end)
                    if commas:
                        target = text(i + 2, commas[0]).strip()
                        stripped = text(commas[0] + 1, end).strip()
                    else:
                        target = stripped[2:].strip()
                        stripped = ""
                trailing = stripped.endswith(",")
                if trailing:
                    stripped = stripped[:-1].rstrip()
                extra = []
                if trailing:
                    extra.append('end=" "')
                if target:
                    extra.append("file=%s" % target)
                inner = ", ".join([a for a in [stripped] if a] + extra)
                new = "print(%s)" % inner
            edits.append((at(t.start), stmt_end_offset(end) if args else at(t.end), new))
        elif t.type == tokenize.NAME and t.string == "except":
            end = i + 1
            while end < len(toks) and not (toks[end].type == tokenize.OP and toks[end].string == ":"):
                end += 1
            commas = _top_level_commas(toks, i + 1, end)
            if len(commas) == 1 and end - commas[0] == 2 and toks[commas[0] + 1].type == tokenize.NAME:
                c = toks[commas[0]]
                edits.append((at(c.start), at(c.end), " as"))
        elif t.type == tokenize.NAME and t.string == "raise" and statement_start(i):
            end = _statement_end(toks, i + 1)
            commas = _top_level_commas(toks, i + 1, end)
            if len(commas) == 1:
                exc = text(i + 1, commas[0]).strip()
                msg = text(commas[0] + 1, end).strip()
                edits.append((at(toks[i + 1].start), stmt_end_offset(end), "%s(%s)" % (exc, msg)))
        elif t.type == tokenize.OP and t.string == "<>":
            edits.append((at(t.start), at(t.end), "!="))
        elif t.string == "<" and i + 1 < len(toks) and toks[i + 1].string == ">" and toks[i + 1].start == t.end:
            edits.append((at(t.start), at(toks[i + 1].end), "!="))
        elif t.type == tokenize.NUMBER:
            nxt = toks[i + 1] if i + 1 < len(toks) else None
            if nxt is not None and nxt.type == tokenize.NAME and nxt.string in ("L", "l") and nxt.start == t.end:
                edits.append((at(nxt.start), at(nxt.end), ""))
            elif re.fullmatch(r"0[0-7]+", t.string):
                edits.append((at(t.start), at(t.end), "0o" + t.string[1:]))
            elif nxt is not None and nxt.type == tokenize.NUMBER and t.string == "0" and nxt.start == t.end and re.fullmatch(r"[0-7]+", nxt.string):
                edits.append((at(t.start), at(nxt.end), "0o" + nxt.string))
        elif t.type == tokenize.NAME and t.string.lower() in ("ur", "ru") and i + 1 < len(toks) and toks[i + 1].type == tokenize.STRING and toks[i + 1].start == t.end:
            edits.append((at(t.start), at(t.end), "r"))

    out = source
    for start, end, new in sorted(edits, key=lambda e: e[0], reverse=True):
        out = out[:start] + new + out[end:]
    return out


def shims():
    """Python 2 names that handler scripts may use."""
    import builtins

    return {
        "xrange": range,
        "unicode": str,
        "basestring": str,
        "long": int,
        "unichr": chr,
        "raw_input": builtins.input,
    }
