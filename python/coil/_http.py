"""Request and Response of the Spin handler model (the old Spin Python SDK).

Request(method, uri, headers, body): `uri` is the path and query as received,
`headers` a dict with lower-case names (repeated headers joined with ", "),
`body` bytes (b"" when empty).

Response(status, headers=None, body=None): `headers` a list of (name, value)
pairs or a dict; `body` bytes, str (sent as UTF-8) or None. Both classes are
plain and mutable, as in the Spin SDK.
"""


class Request:
    __slots__ = ("method", "uri", "headers", "body")

    def __init__(self, method, uri, headers, body):
        self.method = method
        self.uri = uri
        self.headers = headers
        self.body = body

    def __repr__(self):
        return f"Request({self.method!r}, {self.uri!r})"


class Response:
    __slots__ = ("status", "headers", "body")

    def __init__(self, status, headers=None, body=None):
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self):
        return f"Response({self.status!r})"
