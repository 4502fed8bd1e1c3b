import os

from spin_http import Response


def handle_request(request):
    return Response(200, [("content-type", "text/plain")], f"{os.environ['GREETING']}\n")
