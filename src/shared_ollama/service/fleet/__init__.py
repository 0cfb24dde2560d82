"""The fleet of engine hosts (docs/SCALING.md): which hosts there are, whether each is up, what each serves, and
the calls made to them.

Owns the fleet's configuration (``config``: ``config/engines.yaml`` or a comma-separated URL list, parsed into
``Host`` records; ``masked_url`` for anything shown), each host's circuit breaker (``health``: up, down, probing,
with a doubling backoff and an injectable clock), the monitor (``prober``: probes every host through one aiohttp
session, keeps their breakers and latest statuses, answers which hosts serve or have loaded a model, and the
snapshot behind ``GET /api/v1/engines``), the calls that take no slot routed or merged behind the engine client's
interface (``routing``), and the whole as the service uses it (``fleet``: built from the settings, the hosts the
scheduler places requests on, a placed request's call on its host, the health view). May import ``backends``
(the host clients), ``admission.placement`` (the host record the scheduler takes), ``observability.metrics`` (the
hosts' figures), ``protocol``, ``errors`` and ``settings``; the composition root wires the rest.
"""
