"""Scripted scenarios against a fresh local stack (``python -m local`` in a subprocess).

``python -m scenarios.demo`` (``make demo``): a burst over the rate limit, a Kisi outage and
a revoked key, then a table and a timeline plot. ``python -m scenarios.soak`` (``make soak``):
minutes of paced traffic with faults, and figures that must hold. Both drive the stack only
from outside, as callers and operators would: the gateway over HTTP, the Kisi simulator
through its admin API, the embedded AWS through boto3.
"""
