"""The lines of text output that say where a record's input and weights came from.

``run``, ``verify`` (and ``generate``) print them from the record's ``input``, ``checkpoint``,
``armt_variant`` and ``weight_sources`` fields (built by ``rmtsched.api``): a seeded weight is never silent.
"""

from __future__ import annotations

from typing import Any


def provenance_lines(record: dict[str, Any]) -> list[str]:
    """Where the input and the weights came from (run and verify print the same two lines)."""
    source = record["input"]
    where = f"input: {source['tokens']} token ids x batch {source['batch']} from {source['source']}"
    if source["truncated"]:
        where += f", truncated from {source['available_tokens']} to --seq-len {source['tokens']}"
    weights = "; ".join(f"{kind}: {', '.join(names)}" for kind, names in record["weight_sources"].items())
    checkpoint = f"checkpoint {record['checkpoint']}" if record["checkpoint"] else "no checkpoint"
    return [where, f"weights ({checkpoint}, armt_variant {record['armt_variant']}) {weights}"]
