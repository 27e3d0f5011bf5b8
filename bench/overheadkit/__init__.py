"""Helpers for bench/overhead.py: processes, wrk, requests, reporting."""
