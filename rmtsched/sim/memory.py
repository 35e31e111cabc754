"""Device memory: what stays resident on a device, and the peak of what comes and goes.

Resident: the weights and recurrent state of every layer the device runs, the embeddings on the device
of layer 0, the norm and head on the device of layer L-1 (a tied head shares the embedding table when
both are on one device). Transient: a running step's working set, and
each hidden state from the end of the step that produced it to the end of the step that consumes it,
charged to the consumer's device (a sent output is the receiver's buffer from the moment it exists).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from rmtsched.sim.cost import CostModel


def resident_bytes(cost: CostModel, layers: Iterable[int], max_tokens: int) -> float:
    """Weights + recurrent state of ``layers`` (plus embeddings / head when layer 0 / L-1 is among them)."""
    workload = cost.workload
    layers = set(layers)
    per_layer = cost.layer_weight_bytes(max_tokens) + workload.state_bytes_per_layer
    total = len(layers) * per_layer
    if 0 in layers:
        total += workload.first_device_bytes
    if workload.num_layers - 1 in layers:
        total += workload.last_device_bytes
        if 0 in layers:
            total -= workload.tied_table_bytes  # one table serves as embeddings and head
    return total


def peak_transient_bytes(times: np.ndarray, deltas: np.ndarray) -> float:
    """Highest running sum of memory ``deltas`` applied in time order.

    At equal times frees come before allocations (a step's memory is released before the next one
    takes its own), and the peak is read after all allocations of an instant.
    """
    if len(times) == 0:
        return 0.0
    order = np.lexsort((deltas, times))
    return max(0.0, float(np.max(np.cumsum(deltas[order]))))


__all__ = ["peak_transient_bytes", "resident_bytes"]
