"""Specs shared by every layer: one ``ModelSpec`` that the simulator costs and the backend builds,
and one ``HardwareSpec`` that the simulator reads and calibration writes."""

from rmtsched.specs.model import ModelSpec, available_model_specs, load_model_spec, register_model_spec

__all__ = ["ModelSpec", "available_model_specs", "load_model_spec", "register_model_spec"]
