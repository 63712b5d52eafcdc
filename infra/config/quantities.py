"""Quantities as the API server writes them back (resource.Quantity's canonical form).

The server stores a pod's `6144Mi` as `6Gi` and `1.5` CPUs as `1500m`, and so does Trainer
v2's defaulting webhook for a TrainJob's `spec.trainer.resourcesPerNode`, which is
immutable: a re-applied TrainJob that spells a quantity otherwise is refused ("field is
immutable"). The stack writes every resource quantity in this form.
"""

from __future__ import annotations

import re
from decimal import Decimal

BINARY = {"Ki": 10, "Mi": 20, "Gi": 30, "Ti": 40, "Pi": 50, "Ei": 60}
DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15,
           "E": 18}
QUANTITY = re.compile(r"([+-]?[\d.]+(?:[eE][+-]?\d+)?)([A-Za-z]*)")


def canonical(text: str) -> str:
    """``text`` (a valid quantity) in canonical form: a binary suffix stays binary with
    the largest unit that keeps the number whole; a decimal one (or none) the largest
    power of 1000 that does (down to `n`)."""
    number, suffix = QUANTITY.fullmatch(text).groups()
    if "e" in number.lower():
        suffix, number = "", str(Decimal(number) * Decimal(10) ** DECIMAL[suffix or ""])
    if suffix in BINARY:
        total = Decimal(number) * 2 ** BINARY[suffix]
        if total == total.to_integral_value():
            whole = int(total)
            for unit, shift in sorted(BINARY.items(), key=lambda kv: -kv[1]):
                if whole and whole % (1 << shift) == 0:
                    return f"{whole >> shift}{unit}"
            return str(whole)
        value = total
    else:
        value = Decimal(number) * Decimal(10) ** DECIMAL[suffix]
    for unit, power in sorted(DECIMAL.items(), key=lambda kv: -kv[1]):
        scaled = value / Decimal(10) ** power
        if scaled == scaled.to_integral_value() and (abs(scaled) >= 1 or value == 0):
            return f"{int(scaled)}{unit if value else ''}"
    return f"{int((value * 10**9).to_integral_value(rounding='ROUND_CEILING'))}n"


def value(text: str) -> Decimal:
    """``text`` (a valid quantity) as a number: ``1500m`` -> 1.5, ``2Gi`` -> 2147483648."""
    number, suffix = QUANTITY.fullmatch(text).groups()
    if suffix in BINARY:
        return Decimal(number) * 2 ** BINARY[suffix]
    return Decimal(number) * Decimal(10) ** DECIMAL[suffix]
