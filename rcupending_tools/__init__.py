"""rcupending-tools: measure memory queued behind RCU grace periods."""

__version__ = "0.1.0"
