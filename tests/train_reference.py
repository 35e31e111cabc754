"""The oracle for training exactness: ``loss.backward()`` through the sequential forward, in one autograd graph.

Written from the definition, not from the executor, for any ``protocol.TrainableModel``: run every segment
through every layer in order with the model's differentiable layers one at a time (``train_layers`` at
width 1) and its segment ends (``train_segment_input``, ``train_logits``), detach the memory entering a
segment outside the last k when truncating (RMT's ``k2``), sum the per-segment losses, call ``backward()``
once and read each ``.grad``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def model_layer(model, weights, hidden, state, first: bool):
    """One layer of one cell through the model's own differentiable layers, at width 1."""
    return model.train_layers(hidden, weights, state, torch.tensor([not first]))


def sequential_bptt(
    model, inputs: torch.Tensor, targets: torch.Tensor, truncation: int | None = None, layer_fn=model_layer
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``layer_fn(model, weights, hidden, state, first)`` runs one layer on ``[1, ...]`` rows (weights
    ``[1, ...]`` slices): the model's own by default, ``train_plain.plain_layer`` for the plain transcription."""
    params = {name: value.detach().clone().requires_grad_() for name, value in model.params.items()}
    layer_names = model.train_layer_params
    global_weights = {name: value for name, value in params.items() if name not in layer_names}
    segment_len, num_tokens = model.segment_len, inputs.shape[1]
    num_segments = -(-num_tokens // segment_len)
    first_kept = 0 if truncation is None else max(0, num_segments - truncation + 1)
    scored = int((targets != -100).sum())
    states = [model.train_state(inputs.shape[0]) for _ in range(model.num_layers)]
    states = [None if state is None else state.unsqueeze(0) for state in states]
    previous, losses = None, []
    for segment in range(num_segments):
        if 0 < segment < first_kept:
            states = [None if state is None else state.detach() for state in states]
            previous = None if previous is None else previous.detach()
        window = slice(segment * segment_len, (segment + 1) * segment_len)
        hidden = model.train_segment_input(global_weights, inputs[:, window], previous).unsqueeze(0)
        for layer in range(model.num_layers):
            weights = {name: params[name][layer : layer + 1] for name in layer_names}
            hidden, states[layer] = layer_fn(model, weights, hidden, states[layer], segment == 0)
        hidden = hidden[0]
        logits = model.train_logits(global_weights, hidden)
        loss = F.cross_entropy(logits.flatten(0, 1), targets[:, window].flatten(), ignore_index=-100, reduction="sum")
        losses.append(loss / scored)
        previous = hidden if model.uses_previous_output else None
    total = sum(losses)
    total.backward()
    return total.detach(), {name: value.grad for name, value in params.items() if value.grad is not None}


def assert_same_training(model, inputs, targets, schedule, truncation, label: str, expected=None) -> None:
    """``train_gradients`` under ``schedule`` gives ``sequential_bptt``'s loss and gradients, bit for bit
    (``expected``: that oracle's result, when the caller already has it)."""
    from rmtsched.backends.torch.train_executor import train_gradients

    expected_loss, expected_grads = expected or sequential_bptt(model, inputs, targets, truncation)
    result = train_gradients(model, inputs, targets, schedule, truncation=truncation)
    assert torch.equal(result.loss, expected_loss), f"{label}: loss {result.loss} != {expected_loss}"
    assert result.grads.keys() == expected_grads.keys(), label
    for name, grad in expected_grads.items():
        got = result.grads[name]
        assert torch.equal(got, grad), f"{label}: grad of {name} differs by {(got - grad).abs().max().item():.3e}"
