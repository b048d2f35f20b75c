"""Scale-out: many artifacts served on a Ray Serve cluster, each request routed to a replica holding its model.

``catalog`` (the YAML: artifacts, budgets, scaling, validated before anything starts), ``sources`` (where
an artifact lives: a shared path or a URI), ``residency`` (which artifacts a replica holds, within a byte
budget: no Ray in it), ``host`` (one replica's artifacts and runners), ``remote`` (the ingress's repository
of models that run on replicas), ``deployments`` (the two Ray Serve deployments) and ``app`` (the application
builder for ``serve run`` / ``serve deploy``, and ``popfuse serve --ray``). Only ``deployments`` and ``app``
import Ray.
"""
