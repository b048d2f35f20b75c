"""A multi-tenant KServe v2 / Triton inference server over fused artifacts.

Three layers, as MLServer has them: ``protocol`` (request and response types
and their wire codec), ``dataplane`` (transport-free: repository, batching,
admission, statistics) and ``http`` (a thin Starlette adapter that owns the
only table of HTTP status codes). ``popfuse serve`` starts it with uvicorn.
"""
