"""End-to-end WebSocket benchmark: Node clients, two ASGI server processes, one broker.

Run ``python -m benchmarks.e2e --help``; the scenario is described in ``__main__.py``.
"""
