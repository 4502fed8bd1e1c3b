from spin_http import Response


def handle_request(request):
    return Response(200, [("content-type", "text/plain")], b"Hello, world!")
