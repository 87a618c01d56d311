"""How a run shows itself: a live rich view, periodic plain lines, or JSON events (rich imported only here)."""
