"""The NumPy-only core: cell math and the time loop."""

from .cells import PreparedCell, Stepper
from .scan import ScanResult, lengths_to_mask, scan

__all__ = ["PreparedCell", "Stepper", "ScanResult", "scan", "lengths_to_mask"]
