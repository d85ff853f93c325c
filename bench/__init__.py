"""Benchmarks of streamtap against a direct connection and bare mitmproxy (`python -m bench.run`)."""
