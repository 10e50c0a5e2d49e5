"""The one error taxonomy used everywhere in Berth.

    BerthError
    ├── NotFound            (exit 1 / HTTP 404)
    ├── AlreadyExists       (exit 1 / HTTP 409)
    ├── InvalidArgument     (exit 1 / HTTP 400)
    ├── FailedPrecondition  (exit 1 / HTTP 409)
    └── Unavailable         (exit 1 / HTTP 503)

A user sees ``str(error)`` as one line, never a traceback.
"""


class BerthError(Exception):
    http_status = 500
    exit_code = 1


class NotFound(BerthError):
    http_status = 404


class AlreadyExists(BerthError):
    http_status = 409


class InvalidArgument(BerthError):
    http_status = 400


class FailedPrecondition(BerthError):
    http_status = 409


class Unavailable(BerthError):
    http_status = 503
