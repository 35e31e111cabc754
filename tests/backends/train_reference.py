"""The oracle for training exactness: ``loss.backward()`` through the sequential forward, in one autograd graph.

Written from the definition, not from the executor: run every segment through every layer in order with
the differentiable cells (``train_cells``), detach the memory entering a segment outside the last k when
truncating (RMT's ``k2``), sum the per-segment losses, call ``backward()`` once and read each ``.grad``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from rmtsched.backends.torch.params import layer_param_names
from rmtsched.backends.torch.train_cells import cell_maths, head_weight, initial_state


def sequential_bptt(
    model, inputs: torch.Tensor, targets: torch.Tensor, truncation: int | None = None
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    params = {name: value.detach().clone().requires_grad_() for name, value in model.params.items()}
    layer_names = layer_param_names(model.spec)
    global_weights = {name: value for name, value in params.items() if name not in layer_names}
    maths = cell_maths(model)
    segment_len, num_tokens = model.segment_len, inputs.shape[1]
    num_segments = -(-num_tokens // segment_len)
    first_kept = 0 if truncation is None else max(0, num_segments - truncation + 1)
    scored = int((targets != -100).sum())
    states = [initial_state(model, inputs.shape[0]) for _ in range(model.num_layers)]
    previous, losses = None, []
    for segment in range(num_segments):
        if 0 < segment < first_kept:
            states = [None if state is None else state.detach() for state in states]
            previous = None if previous is None else previous.detach()
        window = slice(segment * segment_len, (segment + 1) * segment_len)
        hidden = maths.segment_input(model, global_weights, inputs[:, window], previous)
        for layer in range(model.num_layers):
            weights = {name: params[name][layer] for name in layer_names}
            hidden, states[layer] = maths.layer(model, weights, hidden, states[layer], segment == 0)
        logits = F.linear(maths.segment_output(model, global_weights, hidden), head_weight(model, global_weights))
        loss = F.cross_entropy(logits.flatten(0, 1), targets[:, window].flatten(), ignore_index=-100, reduction="sum")
        losses.append(loss / scored)
        previous = hidden if model.uses_previous_output else None
    total = sum(losses)
    total.backward()
    return total.detach(), {name: value.grad for name, value in params.items() if value.grad is not None}
