"""What every command shares: the argument types, the one-line error (:class:`CommandError`,
:class:`Parser`) and the parent parsers of the shared options (mkdocs' ``common_options``)."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, NoReturn

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Exit code for bad input (issue #2): a usage error, as argparse's own.
EXIT_BAD_INPUT = 2


class CommandError(Exception):
    """A user-facing error: printed as one line, exit code 2."""


class Parser(argparse.ArgumentParser):
    """argparse with the one-line errors of the rest of the command (issue #2: bad input
    gets one clear line and exit code 2); argparse would print the whole usage first."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def common_options() -> Parser:
    """``-q``/``-v``, on every command, after the command name."""
    common = Parser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="only errors")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return common


def add_root_argument(p: argparse.ArgumentParser) -> None:
    """``ROOT``, the folder a command serves or deploys."""
    p.add_argument("root", metavar="ROOT", help="a dataset, or a folder of datasets")


def _int_at_least(text: str, minimum: int, rule: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"{rule}: {value}")
    return value


def positive_int(text: str) -> int:
    return _int_at_least(text, 1, "must be positive")


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    # float() accepts "inf" and "nan"; neither is a voxel size (nor valid JSON in info).
    if not 0 < value < math.inf:
        raise argparse.ArgumentTypeError(f"must be a positive number: {text}")
    return value


def non_negative_int(text: str) -> int:
    return _int_at_least(text, 0, "must not be negative")


#: TCP ports are 16-bit (RFC 9293 3.1); 0 asks the system for a free one.
MAX_PORT = 65535


def port(text: str) -> int:
    """A TCP port to listen on: 0 (any free one) to 65535."""
    value = _int_at_least(text, 0, "must not be negative")
    if value > MAX_PORT:
        raise argparse.ArgumentTypeError(f"not a TCP port (0-{MAX_PORT}): {value}")
    return value


def listen_address(text: str) -> str:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``PORT`` for a server config (``*`` for every address)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    if not port_text.isdigit() or not 1 <= int(port_text) <= MAX_PORT:
        raise argparse.ArgumentTypeError(f"not HOST:PORT with a port 1-{MAX_PORT}: {text!r}")
    bare = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if sep and not bare or any(c.isspace() or c in "/;{}<>\"'" for c in host):
        raise argparse.ArgumentTypeError(f"not HOST:PORT: {text!r}")
    return text


def vec3(values: Sequence[int], flag: str) -> tuple[int, int, int]:
    """One number for a cube or three for x y z."""
    if len(values) == 1:
        return (values[0], values[0], values[0])
    if len(values) == 3:
        return (values[0], values[1], values[2])
    raise CommandError(f"{flag} takes 1 or 3 numbers")
