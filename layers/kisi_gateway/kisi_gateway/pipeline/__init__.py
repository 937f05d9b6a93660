"""The request pipeline: calls in, one accounted attempt at a time, answers out.

``sending`` (one attempt and its bookkeeping), ``forwarding`` (api_call's inline run),
``retrying`` (retry_worker), ``monitoring`` (the metrics Lambda). Each is a thin runner of the
decisions in :mod:`kisi_gateway.core`; the stores come in through their ports.
"""
