"""Corefile lexing, parsing and server block key normalisation."""

from dnsd.corefile.address import normalize_key, normalize_zone, reverse_zones_for_cidr
from dnsd.corefile.ast import Address, CorefileError, Directive, ServerBlock
from dnsd.corefile.parser import parse, parse_file

__all__ = [
    "Address",
    "CorefileError",
    "Directive",
    "ServerBlock",
    "normalize_key",
    "normalize_zone",
    "parse",
    "parse_file",
    "reverse_zones_for_cidr",
]
