"""twistd plugin: ``twistd -n sse-offload --rules FILE``.

Kept to a few cheap lines: every ``twistd`` run imports every plugin file.
"""

from twisted.application.service import ServiceMaker

sse_offload = ServiceMaker(
    "sse-offload",
    "sse_offload.tap",
    "Server-Sent Events gateway: uWSGI-style rules, Redis pub/sub",
    "sse-offload",
)
