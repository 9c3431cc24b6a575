"""Plotly figures: each takes the attention record (or plain arrays) and returns a Figure."""
