"""The rich dashboard: state (what it remembers), render (one frame), app (shows a feed)."""

from .app import show
from .render import render
from .state import DashboardState

__all__ = ["DashboardState", "render", "show"]
