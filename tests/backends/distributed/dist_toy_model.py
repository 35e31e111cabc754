"""A toy layer-recurrent model implementing the RecurrentModel protocol, to test the distributed machinery
apart from ARMT: per-layer state h_l (a running summary of the segment), optional global memory tokens, an
optional slice_layers hook (same convention as the built-in models: a slice keeps global layer indices and
says which layers it holds in ``layers``), and injectable faults (raise, exit, hang) at a chosen cell.
"""

from __future__ import annotations

import os
import time

import torch

from rmtsched.backends.protocol import LayerState


class ToyRecurrentModel:
    """out = hidden + tanh(hidden @ W_l + h_l @ U_l); h_l <- mean of out over tokens.

    Layer-local by default (tokens per cell T + M: segment then M constant memory tokens); with
    ``global_memory`` the last layer's M trailing outputs of segment s-1 lead segment s (T + 2M tokens).
    """

    def __init__(
        self,
        *,
        num_layers: int,
        d_model: int,
        segment_len: int,
        mem_tokens: int,
        vocab_size: int,
        global_memory: bool,
        seed: int,
        dtype: torch.dtype,
        device: torch.device,
        fault: tuple[str, int, int] | None = None,
    ):
        generator = torch.Generator().manual_seed(seed)

        def randn(*shape: int, scale: float) -> torch.Tensor:
            return (torch.randn(*shape, generator=generator, dtype=torch.float64) * scale).to(dtype).to(device)

        self.num_layers = num_layers
        self.segment_len = segment_len
        self.mem_tokens = mem_tokens
        self.uses_previous_output = global_memory
        self.dependency_rule = "global_memory" if global_memory else "layer_local"
        self.embedding = randn(vocab_size, d_model, scale=0.5)
        self.weight = randn(num_layers, d_model, d_model, scale=d_model**-0.5)
        self.mix = randn(num_layers, d_model, d_model, scale=d_model**-0.5)
        self.memory = randn(max(mem_tokens, 1), d_model, scale=1.0)[:mem_tokens]
        self.fault = fault
        self.layers = range(num_layers)
        self._seen = [0] * num_layers

    def init_state(self, batch_size: int) -> LayerState:
        self._seen = [0] * self.num_layers
        width, d_model = len(self.layers), self.weight.shape[-1]
        return {"h": torch.zeros(width, batch_size, d_model, dtype=self.weight.dtype, device=self.weight.device)}

    def segment_input(self, segment: int, inputs: torch.Tensor, previous_output: torch.Tensor | None) -> torch.Tensor:
        tokens = self.embedding[inputs] if not inputs.is_floating_point() else inputs.to(self.embedding.dtype)
        memory = self.memory.expand(tokens.shape[0], -1, -1)
        if not self.uses_previous_output:
            return torch.cat([tokens, memory], dim=1)
        read = memory if previous_output is None else previous_output[:, previous_output.shape[1] - self.mem_tokens :]
        return torch.cat([read, tokens, memory], dim=1)

    def forward_layers(self, hidden: torch.Tensor, layers: range, state: LayerState) -> torch.Tensor:
        self._maybe_fail(layers)
        width, batch, tokens, d_model = hidden.shape
        stage = slice(layers.start - self.layers.start, layers.stop - self.layers.start)
        pre = torch.matmul(hidden.reshape(width, batch * tokens, d_model), self.weight[stage])
        carry = torch.matmul(state["h"][stage], self.mix[stage])
        out = hidden + torch.tanh(pre.reshape(width, batch, tokens, d_model) + carry.unsqueeze(2))
        state["h"][stage] = out.mean(dim=2)
        return out

    def segment_output(self, hidden: torch.Tensor) -> torch.Tensor:
        start = self.mem_tokens if self.uses_previous_output else 0
        return hidden[:, start : hidden.shape[1] - self.mem_tokens]

    def slice_layers(self, start: int, stop: int) -> ToyRecurrentModel:
        stage = object.__new__(ToyRecurrentModel)
        stage.__dict__.update(self.__dict__)
        stage.layers = range(start, stop)
        stage.weight = self.weight[start - self.layers.start : stop - self.layers.start].clone()
        stage.mix = self.mix[start - self.layers.start : stop - self.layers.start].clone()
        return stage

    def _maybe_fail(self, layers: range) -> None:
        for layer in layers:
            cell = (layer, self._seen[layer])
            self._seen[layer] += 1
            if self.fault is None or cell != tuple(self.fault[1:]):
                continue
            kind = self.fault[0]
            if kind == "raise":
                raise RuntimeError(f"injected failure at cell {cell}")
            if kind == "exit":
                os._exit(3)
            if kind == "hang":
                time.sleep(3600)


def build_toy(*, device: torch.device, with_slice: bool = True, **options) -> ToyRecurrentModel:
    """The factory the launcher calls in every rank (``functools.partial(build_toy, ...)``)."""
    model = ToyRecurrentModel(device=device, **options)
    if not with_slice:
        model.slice_layers = None  # type: ignore[assignment]  # makes the rank keep every layer
    return model


def reference_run(model: ToyRecurrentModel, inputs: torch.Tensor) -> tuple[list[torch.Tensor], LayerState]:
    """The obviously-correct loop: every layer of segment 0, then segment 1, ..., one cell at a time."""
    state = model.init_state(inputs.shape[0])
    outputs, previous = [], None
    for segment, start in enumerate(range(0, inputs.shape[1], model.segment_len)):
        hidden = model.segment_input(segment, inputs[:, start : start + model.segment_len], previous)
        for layer in range(model.num_layers):
            hidden = model.forward_layers(hidden.unsqueeze(0), range(layer, layer + 1), state)[0]
        outputs.append(model.segment_output(hidden))
        previous = hidden
    return outputs, state


def build_toy_from_spec(
    spec, *, seed: int, dtype: torch.dtype, device: torch.device, fault: tuple[str, int, int] | None = None
) -> ToyRecurrentModel:
    """The toy under the builder signature torchrun's worker expects: ``builder(spec, *, seed, dtype, device)``."""
    return ToyRecurrentModel(
        num_layers=spec.num_layers, d_model=spec.d_model, segment_len=spec.segment_len, mem_tokens=spec.mem_tokens,
        vocab_size=spec.vocab_size, global_memory=spec.family == "rmt", seed=seed, dtype=dtype, device=device,
        fault=fault,
    )  # fmt: skip


def build_failing_toy_from_spec(spec, **options) -> ToyRecurrentModel:
    """The same toy, raising in cell (1, 0): a worker whose step fails."""
    return build_toy_from_spec(spec, fault=("raise", 1, 0), **options)
