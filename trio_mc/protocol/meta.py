"""Parsing the meta commands (mg, ms, md, ma, me, mn), memcached 1.6.18's rules.

Flags are one byte, optionally followed by a token (``T30``, ``Oabc``).  One table,
:data:`FLAGS`, says how each flag's token is read and what error a bad token gives; the
same pre-parse runs for every meta command (memcached's ``_meta_flag_preparse``), then each
command applies its own checks.  Return flags are answered in request order, so the command
keeps its flag tokens as sent.

Newer-than-1.6.18 flags that do not conflict with it are accepted too: ``E`` (set the CAS
value), ``x`` (md: drop the value, keep the item), ``s`` on ms (return the size), ``C`` on
mg (drop ``v`` when the CAS matches) and ``N`` on ms append (create on miss).
"""

from __future__ import annotations

from collections.abc import Callable

from trio_mc.numbers import safe_strtol, safe_strtoul, safe_strtoull
from trio_mc.protocol import base64, replies
from trio_mc.protocol import commands as cmd

#: memcached's MFLAG_MAX_OPT_LENGTH: more tokens than this (terminal one included) is an error.
MAX_OPT_TOKENS = 20
#: memcached's MFLAG_MAX_OPAQUE_LENGTH, the ``O`` included.
MAX_OPAQUE_LENGTH = 32

_BAD_TOKEN = b"CLIENT_ERROR bad token in command line format"
_FORMAT = b"CLIENT_ERROR bad command line format"


def _err(text: bytes) -> cmd.Reply:
    return cmd.Reply(text + b"\r\n")


# Flag byte -> (field of the command to set, token parser or None, error text for a bad
# token).  Flags with no attribute are return-only flags, handled when the reply is built.
_Parse = Callable[[bytes], "int | None"]
FLAGS: dict[int, tuple[str | None, _Parse | None, bytes]] = {
    ord("b"): (None, None, b""),  # handled specially: decodes the key
    ord("N"): ("vivify", safe_strtol, _BAD_TOKEN),
    ord("T"): ("ttl", safe_strtol, _BAD_TOKEN),
    ord("R"): ("recache", safe_strtol, _BAD_TOKEN),
    ord("F"): ("client_flags", safe_strtoul, b""),  # keeps the previous error text
    ord("C"): ("compare_cas", safe_strtoull, _BAD_TOKEN),
    ord("E"): ("new_cas", safe_strtoull, _BAD_TOKEN),
    ord("J"): ("initial", safe_strtoull, b"CLIENT_ERROR invalid numeric initial value"),
    ord("D"): ("delta", safe_strtoull, b"CLIENT_ERROR invalid numeric delta value"),
    ord("M"): ("mode", None, b"CLIENT_ERROR incorrect length for M token"),
    ord("v"): ("value", None, b""),
    ord("q"): ("quiet", None, b""),
    ord("u"): ("no_update", None, b""),
    ord("I"): ("stale", None, b""),
    ord("x"): ("drop_value", None, b""),
    **{ord(f): (None, None, b"") for f in "OPLkstcfhl"},
}


_TYPES: dict[int, type[cmd.MetaGet] | type[cmd.MetaSet] | type[cmd.MetaDelete] | type[cmd.MetaArith]] = {
    ord("g"): cmd.MetaGet, ord("s"): cmd.MetaSet, ord("d"): cmd.MetaDelete, ord("a"): cmd.MetaArith,
}
#: The fields each command type takes from the pre-parsed flags (the others are ignored,
#: as memcached ignores a valid flag that a command does not use).
_FIELDS = {op: frozenset(t.__dataclass_fields__) - {"key", "tokens"} for op, t in _TYPES.items()}
_MS_MODES = frozenset(b"SEAPR")
_MA_MODES = frozenset(b"I+D-")


def parse_meta(tokens: list[bytes], item_too_large: Callable[[int, int, int], bool]) -> cmd.Command:
    """Parse a meta command line (``tokens[0]`` is ``mg``/``ms``/``md``/``ma``/``me``/``mn``).

    Returns a :class:`~trio_mc.protocol.commands.MetaGet`, ``MetaSet`` (still without its
    data: the parser reads it next), ``MetaDelete`` or ``MetaArith``; a
    :class:`~trio_mc.protocol.commands.MetaSwallow` (ms refused after its length was read);
    or a reply.

    Args:
      item_too_large: ``(key length, client flags, value length + 2) -> bool``, the ``-I``
        rule, so a too-large ms is refused before its data is read.
    """
    op = tokens[0][1]
    if op == ord("n"):
        return cmd.Reply(replies.MN)
    if op == ord("e"):
        return _parse_me(tokens)
    if op not in _TYPES or len(tokens) < 2:
        return cmd.Reply(replies.ERROR)
    if len(tokens[1]) > 250:
        return _err(_FORMAT)
    if op == ord("s") and len(tokens) == 2:
        return _err(_FORMAT)
    if len(tokens) + 1 > MAX_OPT_TOKENS:
        return _err(b"CLIENT_ERROR options flags are too long" if op == ord("g")
                    else b"CLIENT_ERROR options flags too long")
    need = 0
    first = 2
    if op == ord("s"):
        vlen = safe_strtol(tokens[2])
        if vlen is None or vlen < 0 or vlen > (1 << 31) - 3:
            return _err(_FORMAT)
        need = vlen + 2
        first = 3
    flag_tokens = tokens[first:]
    values: dict[str, int | bool | bytes] = {"key": tokens[1]}
    error = _preparse(op, flag_tokens, values)
    if error is not None:
        if op in b"da":  # md and ma report every pre-parse problem the same way
            error = b"CLIENT_ERROR invalid or duplicate flag"
        return _refuse(op, error, need)
    mode = values.get("mode", 0)
    if op == ord("s") and mode and mode not in _MS_MODES:
        return _refuse(op, b"CLIENT_ERROR invalid mode for ms M token", need)
    # An over-long opaque: ms and md refuse before acting; mg and ma act first, then say so.
    late_error = None
    for i, token in enumerate(flag_tokens):
        if token[0] == ord("O") and len(token) > MAX_OPAQUE_LENGTH:
            if op in b"sd":
                return _refuse(op, b"CLIENT_ERROR opaque token too long", need)
            # memcached stops applying flags at the bad opaque: the ones after it are lost.
            late_error = replies.OPAQUE_TOO_LONG
            flag_tokens = flag_tokens[:i]
            break
    fields = _FIELDS[op]
    command = _TYPES[op](tokens=flag_tokens, **{k: v for k, v in values.items() if k in fields or k == "key"})  # type: ignore[arg-type]
    if late_error is not None:
        command.late_error = late_error  # type: ignore[union-attr]
    if command.__class__ is cmd.MetaSet:
        if item_too_large(len(command.key), command.client_flags, need):
            return cmd.MetaSwallow(replies.SERVER_ERROR_TOO_LARGE, need, command.key)
        command.need = need
    elif op == ord("a") and mode and mode not in _MA_MODES:
        return _err(b"CLIENT_ERROR invalid mode for ma M token")
    return command


def _refuse(op: int, error: bytes, need: int) -> cmd.Command:
    """An error reply; for ms the data block that follows is swallowed."""
    if op == ord("s"):
        return cmd.MetaSwallow(error + b"\r\n", need, None)
    return _err(error)


def _preparse(op: int, tokens: list[bytes], values: dict[str, int | bool | bytes]) -> bytes | None:
    """memcached's ``_meta_flag_preparse``: fills ``values`` (field name -> value) and
    returns the error text, or ``None`` if all is well."""
    seen = set()
    error: bytes | None = None
    for token in tokens:
        flag = token[0]
        if flag >= 127 or flag in seen:
            return b"CLIENT_ERROR duplicate flag"
        seen.add(flag)
        spec = FLAGS.get(flag)
        if spec is None:
            return b"CLIENT_ERROR invalid flag"
        attr, parse, bad = spec
        if flag == ord("x") and op != ord("d"):
            return b"CLIENT_ERROR invalid flag"  # x (drop the value) exists only for md
        if flag == ord("b"):
            key = base64.decode(values["key"])  # type: ignore[arg-type]
            if key is None:
                error = b"CLIENT_ERROR error decoding key"
            else:
                values["key"] = key
                values["binary"] = True
        elif flag == ord("M"):
            if len(token) != 2:
                error = bad
            else:
                values["mode"] = token[1]
        elif parse is not None:
            value = parse(token[1:])
            if value is None:
                error = bad or error or _FORMAT
            else:
                values[attr] = value  # type: ignore[index]
        elif attr is not None:
            values[attr] = True
    return error


def _parse_me(tokens: list[bytes]) -> cmd.Command:
    if len(tokens) < 2 or len(tokens[1]) > 250:
        return _err(_FORMAT)
    key = tokens[1]
    binary = len(tokens) >= 3 and tokens[2] == b"b"
    if binary:
        decoded = base64.decode(key)
        if decoded is None:
            return _err(_FORMAT)
        key = decoded
    return cmd.MetaDebug(key)
