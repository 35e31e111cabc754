"""Execution backends: interpreters that run a schedule on real hardware (PyTorch today)."""
