"""flowrl: flow-based policies for online reinforcement learning (see README.md and CHANGELOG.md)."""

__version__ = "0.2.0"
