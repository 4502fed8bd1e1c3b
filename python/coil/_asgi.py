"""The ASGI server that runs inside an instance.

An instance of an ASGI function runs one asyncio event loop (uvloop when it is
installed), created after the fork: a template never has a live loop. The loop
reads frames from the instance socket (decoded by the C codec in `_coil`),
runs each request as a task of `app(scope, receive, send)`, and writes
response frames back in batches: everything sent during one turn of the loop
goes out in one write.

Contract with the host (see src/protocol/frame.h):
  - after lifespan startup the instance sends READY, or FAILED with the app's
    message and exits 1;
  - every request stream ends with exactly one final frame: a response (head
    or body) frame with END, or RESET when the response cannot be completed
    (the app raised after starting it, or the host cancelled the stream);
  - INPUT_CLOSED (the client closed its sending side after its request: it
    left, or half-closed) makes receive() return http.disconnect, as uvicorn
    does; what the app sends still goes out;
  - CANCEL from the host makes receive() return http.disconnect; when its
    reason is a deadline (b"timeout"), it also cancels the request's task,
    when the client went away (b"disconnect"), the app runs on to its end.
    A CANCEL of a stream that has not ended is answered CANCEL_TAKEN at once:
    the event loop is alive, whatever the app's cancellation then takes;
  - a timed-out request whose work runs on in a thread that cannot be
    stopped (a sync endpoint) makes the instance send RECYCLE: the host
    sends it no more requests and closes it once they have ended;
  - when the host closes the socket, the requests' tasks still running get
    _CLOSE_GRACE to finish, then lifespan shutdown runs and the process exits.
"""
import asyncio
import gc
import inspect  # imported by asyncio already
import os
import socket
import sys
import traceback

import _coil

(REQUEST_HEAD, REQUEST_BODY, CANCEL, RESET, READY, FAILED, WS_CLOSE, PAGE_HINTS, DRAINED, CONTINUE, CANCEL_TAKEN,
 RECYCLE, INPUT_CLOSED) = (1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15)
_ASGI = {"version": "3.0", "spec_version": "2.3"}
_LIFESPAN_TIMEOUT = 30.0
_DISCONNECT = {"type": "http.disconnect"}
# An app listening on receive() when its request times out gets http.disconnect
# and this long to finish before its task is cancelled (the host kills the
# instance if a cancelled request has not ended within a second).
_DISCONNECT_GRACE = 0.5
# A WebSocket app whose client left learns it from receive() (websocket.disconnect)
# or from send(), which raises ClientDisconnected; one that does neither within
# this long is cancelled.
_WS_GONE_GRACE = 5.0
_READ_SIZE = 65536  # bytes per read from the host
# Flow control (src/protocol/frame.h): response body bytes of one stream that
# may be on their way to its client; send() waits while more are. A larger
# body goes out in slices of _SLICE bytes, each waiting for room. Defined by
# the C side of send() (src/python/exchange.h).
_WINDOW = _coil.RESPONSE_WINDOW
_SLICE = _coil.RESPONSE_SLICE
# The other way, a streamed request body: the host reads the client only while
# the app has not left more than a MiB of it untaken, and hears of what it
# took every _BODY_REPORT bytes (frame.h).
_BODY_REPORT = 256 << 10
_FLUSH_AFTER = 0.0002  # seconds
# When the host closes the instance (idle, or coil stopping), the tasks of
# requests still running (background tasks after a response, requests whose
# client left) get this long to finish before they are cancelled and
# lifespan shutdown runs. coil kills instances still running 5 s after it
# began stopping, whatever this says.
_CLOSE_GRACE = 30.0
# Work a cancelled task leaves running in another thread is awaited through
# a future chained to an executor's (run_in_executor: asyncio's to_thread,
# asgiref's sync_to_async under Django's sync views, Quart's run_sync), or
# in anyio's own worker threads (Starlette's and FastAPI's sync endpoints,
# run_in_threadpool), through this coroutine (file name suffix, name).
_ANYIO_THREAD_WAIT = ("/anyio/_backends/_asyncio.py", "run_sync_in_worker_thread")
_TASK_NAME = "coil-request"  # the name of every request's task


class ClientDisconnected(OSError):
    """Raised by a WebSocket's send() once its client has gone (ASGI 2.4: "a
    server-specific subclass of IOError"; uvicorn's has the same name)."""


def _new_loop():
    try:
        import uvloop

        return uvloop.new_event_loop()
    except ImportError:
        return asyncio.new_event_loop()


def warm_up():
    """In the template of an ASGI app, after its import: imports uvloop when
    it is installed, and runs asyncio's own first-use work once on a loop
    that is closed again (no live loop is ever forked), so that every
    instance starts with it done. Runs no application code. A plain asyncio
    loop, not uvloop: libuv keeps process-wide state (a signal lock pipe)
    from its first loop on, which every instance would then inherit."""
    try:
        import uvloop  # noqa: F401 - imported for the instances' _new_loop()
    except ImportError:
        pass
    # Not asyncio.new_event_loop(): an app may have installed uvloop's policy
    # at import, and no uvloop loop may ever exist in a template.
    loop = asyncio.SelectorEventLoop()
    try:
        async def exercise():
            queue = asyncio.Queue()
            await queue.put(None)
            await queue.get()
            await asyncio.ensure_future(asyncio.sleep(0))
            await asyncio.wait_for(asyncio.sleep(0), 1)
        loop.run_until_complete(exercise())
    finally:
        loop.close()
        asyncio.set_event_loop(None)


class Instance:
    """An ASGI function's instance, as coil._runtime.load() returns it: the
    template forks, and the child calls it with its socket.

    prepare() runs, in a standby (an instance forked ahead of need, see
    src/python/zygote.cc), everything that needs no socket: the event loop and
    lifespan startup. A cold start then pays for neither. A standby that is
    never handed a socket runs lifespan shutdown (retire()) when coil stops,
    as an instance would (a function version that `coil server` retires ends
    it at once); one whose startup fails ends at once.
    """

    def __init__(self, app, function, root_path_in_path):
        self.app = app
        self.function = function
        self.root_path_in_path = root_path_in_path
        self._prepared = None  # (loop, server, startup outcome)

    def prepare(self):
        """In a standby. A startup that fails (or raises) ends the standby: the
        instance is then forked when it is needed, and runs startup afresh
        (a database that was down may be up by then)."""
        try:
            loop = _new_loop()
            asyncio.set_event_loop(loop)
            server = _Server(loop, self.app, self.function, self.root_path_in_path)
            outcome = loop.run_until_complete(server.startup())
        except BaseException:  # noqa: BLE001 - SystemExit included: a standby never runs atexit
            traceback.print_exc()
            outcome = (False, "")
        if not outcome[0]:
            if outcome[1]:
                print(f"coil: lifespan startup failed: {outcome[1]}", file=sys.stderr)
            sys.stderr.flush()
            os._exit(1)
        self._prepared = (loop, server, outcome)

    def retire(self):
        """In a standby that will not serve (coil stops): the lifespan shutdown
        of the startup prepare() ran."""
        if self._prepared is None:
            return
        loop, server, _ = self._prepared
        try:
            loop.run_until_complete(server.shutdown())
        finally:
            sys.stdout.flush()
            sys.stderr.flush()

    def __call__(self, fd):
        """Runs the instance until the host closes the socket; never returns."""
        if self._prepared is not None:
            loop, server, outcome = self._prepared
        else:
            loop = _new_loop()
            asyncio.set_event_loop(loop)
            server = _Server(loop, self.app, self.function, self.root_path_in_path)
            outcome = None
        server.attach(fd)
        code = loop.run_until_complete(server.run(outcome))
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class _Server:
    def __init__(self, loop, app, function, root_path_in_path):
        self.loop = loop
        self.fd = -1
        self.sock = None  # attach()
        self.app = app
        self.function = function
        self.root_path_in_path = root_path_in_path
        self.inbuf = bytearray()
        # What each read lands in (see on_readable). Made here, in a standby's
        # prepare(), so that its pages are not first touched on a request.
        self.readbuf = memoryview(bytearray(_READ_SIZE))
        self.out = bytearray()
        # The exchanges whose response started in this turn of the loop and
        # whose head no body part took along yet (put_waiting_heads). Read by
        # every exchange once (src/python/exchange.h): never replaced.
        self.heads = []
        self.writing = False
        self.flush_scheduled = False
        self.last_flush = 0.0
        self.exchanges = {}
        self.state = {}
        self.closed = loop.create_future()
        self.lifespan_task = None
        self.lifespan_receive = None
        self.lifespan_send = None
        self.hints_reported = False
        self.recycling = False  # RECYCLE was sent

    # ------------------------------------------------------------------ life

    def attach(self, fd):
        self.fd = fd
        self.sock = socket.socket(fileno=fd)
        self.sock.setblocking(False)

    async def run(self, startup=None):
        """Serves until the host closes the socket. `startup`: the outcome of
        lifespan startup when it ran ahead (Instance.prepare), else it runs now."""
        ok, message = startup if startup is not None else await self.startup()
        if not ok:
            print(f"coil: lifespan startup failed: {message}", file=sys.stderr)
            _coil.put_frame(self.out, FAILED, 0, message.encode("utf-8", "replace"))
            self.sock.setblocking(True)
            self.sock.sendall(self.out)
            return 1
        _coil.put_frame(self.out, READY, 0, b"")
        self.flush()
        self.loop.add_reader(self.fd, self.on_readable)
        await self.closed
        self.loop.remove_reader(self.fd)
        await self.finish_tasks()
        await self.shutdown()
        return 0

    async def finish_tasks(self):
        """After the host closed the socket: what no client waits for any more
        (background tasks after a response, a request whose client left) gets
        _CLOSE_GRACE to end, as uvicorn waits for its tasks when it stops.
        Their sends go nowhere. Requests cancelled already (timed out) get a
        second: they are over."""
        for exchange in list(self.exchanges.values()):
            # No client waits on any stream now. A WebSocket app is cancelled
            # (below: at once, or after _DISCONNECT_GRACE if it listens), with
            # none of _WS_GONE_GRACE: the instance is closing.
            exchange.cancel(b"disconnect" if exchange.runs_on_after_disconnect else b"closing")
        running = [exchange for exchange in self.exchanges.values()
                   if exchange.task is not None and not exchange.task.done()]
        # A WebSocket app is cancelled (cancel(b"closing")).
        working = {exchange.task for exchange in running
                   if exchange.runs_on_after_disconnect and not exchange.task.cancelling()}
        cancelled = {exchange.task for exchange in running} - working
        if working:
            print(f"coil: waiting up to {_CLOSE_GRACE:.0f} s for {len(working)} task(s) still running after "
                  f"their response or their client's leaving (background work)", file=sys.stderr)
            _, pending = await asyncio.wait(working, timeout=_CLOSE_GRACE)
            if pending:
                print(f"coil: {len(pending)} such task(s) still running after {_CLOSE_GRACE:.0f} s are cancelled",
                      file=sys.stderr)
                for task in pending:
                    task.cancel()
                cancelled |= pending
        cancelled = {task for task in cancelled if not task.done()}
        if cancelled:
            await asyncio.wait(cancelled, timeout=1.0)

    async def startup(self):
        """Runs lifespan startup. Returns (ok, message)."""
        self.lifespan_receive = asyncio.Queue()
        self.lifespan_send = asyncio.Queue()
        scope = {"type": "lifespan", "asgi": _ASGI, "state": self.state}
        self.lifespan_receive.put_nowait({"type": "lifespan.startup"})
        self.lifespan_task = self.loop.create_task(
            self.app(scope, self.lifespan_receive.get, self.lifespan_send.put))
        event = self.loop.create_task(self.lifespan_send.get())
        done, _ = await asyncio.wait({event, self.lifespan_task}, timeout=_LIFESPAN_TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        if event in done:
            message = event.result()
            kind = message.get("type")
            if kind == "lifespan.startup.complete":
                return True, ""
            if kind == "lifespan.startup.failed":
                return False, message.get("message", "") or "lifespan.startup.failed"
            return False, f"unexpected lifespan message {kind!r}"
        event.cancel()
        if not done:
            return False, f"lifespan startup did not complete within {_LIFESPAN_TIMEOUT:.0f} s"
        # The app returned or raised without answering: it does not support
        # lifespan, which is allowed (as uvicorn's "auto" mode has it). Its
        # exception is taken here (else asyncio reports it as never retrieved)
        # and named in one line: a startup that crashed before answering
        # shows, without a traceback per instance for the apps that simply
        # refuse the scope (Django).
        task, self.lifespan_task = self.lifespan_task, None
        error = None if task.cancelled() else task.exception()
        if error is not None:
            print(f"coil: ASGI lifespan appears unsupported by {self.function} "
                  f"({type(error).__name__}: {error}); serving without it", file=sys.stderr)
        return True, ""

    async def shutdown(self):
        if self.lifespan_task is None or self.lifespan_task.done():
            return
        self.lifespan_receive.put_nowait({"type": "lifespan.shutdown"})
        event = self.loop.create_task(self.lifespan_send.get())
        done, _ = await asyncio.wait({event, self.lifespan_task}, timeout=10.0, return_when=asyncio.FIRST_COMPLETED)
        if event in done:
            message = event.result()
            if message.get("type") == "lifespan.shutdown.failed":
                print(f"coil: lifespan shutdown failed: {message.get('message', '') or 'lifespan.shutdown.failed'}",
                      file=sys.stderr)
        elif self.lifespan_task in done:
            task = self.lifespan_task
            error = None if task.cancelled() else task.exception()
            if error is not None:
                print(f"coil: lifespan shutdown failed: {type(error).__name__}: {error}", file=sys.stderr)
        else:
            print("coil: lifespan shutdown did not complete within 10 s", file=sys.stderr)
        event.cancel()

    # ------------------------------------------------------------------ I/O

    def on_readable(self):
        # Reads land in one buffer made ahead (__init__): `sock.recv(n)` would
        # allocate n bytes per read, and above malloc's mmap threshold that
        # is an mmap, an mremap and a munmap (and fresh zeroed pages) per read.
        # What one read leaves in the socket makes the loop call again.
        try:
            n = self.sock.recv_into(self.readbuf)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = 0
        if n == 0:
            if not self.closed.done():
                self.closed.set_result(None)
            return
        buffer = self.inbuf
        buffer += self.readbuf[:n]
        try:
            frames, consumed = _coil.decode(buffer, self.state, self.root_path_in_path)
        except Exception:  # noqa: BLE001 - a corrupt stream cannot be resynchronised
            print("coil: corrupt frame stream from the host; the instance exits", file=sys.stderr)
            traceback.print_exc()
            sys.stderr.flush()
            os._exit(1)
        if consumed:
            del buffer[:consumed]
        for frame in frames:
            kind = frame[0]
            if kind == REQUEST_HEAD:
                self.start(frame)
            elif kind == REQUEST_BODY:
                exchange = self.exchanges.get(frame[1])
                if exchange is not None:
                    exchange.feed(frame[3], frame[2], frame[4], frame[5])
            elif kind == WS_CLOSE:
                exchange = self.exchanges.get(frame[1])
                if exchange is not None:
                    exchange.client_closed(frame[2])
            elif kind == CANCEL:
                exchange = self.exchanges.get(frame[1])
                if exchange is not None:
                    if not exchange.finished:
                        # The host waits for this (its kill of a blocked loop
                        # depends on it); a stream that has ended is over there too.
                        _coil.put_frame(self.out, CANCEL_TAKEN, frame[1], b"")
                        self.schedule_flush()
                    exchange.cancel(frame[2])
            elif kind == DRAINED:
                exchange = self.exchanges.get(frame[1])
                if exchange is not None:
                    exchange.drained(frame[2])
            elif kind == INPUT_CLOSED:
                exchange = self.exchanges.get(frame[1])
                if exchange is not None:
                    exchange.input_closed()

    def schedule_flush(self):
        # Responses finished within one turn of the loop go out in one write,
        # unless the last write is older than _FLUSH_AFTER: then a slow turn
        # (a heavy app running many requests) does not hold back the clients
        # whose responses are ready.
        if self.loop.time() - self.last_flush >= _FLUSH_AFTER:
            self.flush()
        elif not self.flush_scheduled:
            self.flush_scheduled = True
            self.loop.call_soon(self.flush)

    def put_heads_soon(self):
        """Called by the first exchange of a turn that joins self.heads."""
        self.loop.call_soon(self.put_waiting_heads)

    def put_waiting_heads(self):
        # At the end of the turn in which they were started: a response whose
        # body has not come goes out as a head alone, as uvicorn writes it at
        # http.response.start, so that its client (an SSE client) has it and
        # timeout_ms no longer runs; a body that comes in the same turn takes
        # the head along in one frame, and a complete response keeps its
        # content-length.
        waiting = self.heads[:]
        self.heads.clear()
        written = False
        for exchange in waiting:
            if not (exchange.head_sent or exchange.finished or exchange.disconnected):
                try:
                    exchange.put_head()
                except Exception:  # noqa: BLE001 - out of memory: this stream ends, the others go on
                    exchange.end_abnormally(None)
                written = True
        if written:
            self.schedule_flush()

    def flush(self):
        self.flush_scheduled = False
        self.last_flush = self.loop.time()
        if self.writing or not self.out:
            return
        try:
            sent = self.sock.send(self.out)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self.out.clear()
            return
        del self.out[:sent]
        if self.out:
            self.writing = True
            self.loop.add_writer(self.fd, self.on_writable)

    def on_writable(self):
        self.writing = False
        self.loop.remove_writer(self.fd)
        self.flush()

    # ------------------------------------------------------------------ requests

    def start(self, frame):
        """A new request: its scope, complete (built by the codec, with a
        copy of the lifespan state), runs the app in a task of its own."""
        _, stream, end, scope, body = frame
        if scope["type"] == "websocket":
            exchange = _WebSocket(self, stream)
        else:
            exchange = _Exchange(self, stream, body, end)
        self.exchanges[stream] = exchange
        coro = exchange.run(self.app, scope)
        if self.loop.get_task_factory() is None:
            # What loop.create_task() does, less its cost per request: the
            # call through the loop, and a "Task-N" name formatted per task.
            exchange.task = asyncio.Task(coro, loop=self.loop, name=_TASK_NAME)
        else:  # the app installed a task factory: its tasks are made by it
            exchange.task = self.loop.create_task(coro)

    def finished(self, exchange):
        self.exchanges.pop(exchange.stream, None)
        if not self.hints_reported:
            # Once, after the first response is on its way: the pages the
            # first request copied, for the next standbys (src/python/page_hints.h).
            self.hints_reported = True
            self.loop.call_soon(self.report_page_hints)

    def report_page_hints(self):
        hints = _coil.first_request_report()
        if hints:
            _coil.put_frame(self.out, PAGE_HINTS, 0, hints)
            self.schedule_flush()

    def recycle(self, why):
        """Asks the host for no more requests, and to close the instance once
        those it has are done (see _Stream.cancel_task)."""
        if self.recycling:
            return
        self.recycling = True
        print(f"coil: {why}; this instance takes no new requests and is replaced", file=sys.stderr)
        _coil.put_frame(self.out, RECYCLE, 0, why.encode("utf-8", "replace"))
        self.schedule_flush()


class _Stream(_coil.StreamBase):
    """What HTTP and WebSocket exchanges share: the task running the app, a
    receive() waiting for input, and cancellation from the host. Made as
    _Stream(server, stream); its fields (server, stream, waiter, disconnected,
    finished, task, running) are the C base's (src/python/exchange.h)."""

    __slots__ = ()

    # send is the stream itself (run()); asyncio.iscoroutinefunction(send)
    # and what relies on it (asgiref's async_to_sync) take it as async, as
    # they take a bound `async def send` under uvicorn.
    _is_coroutine = asyncio.coroutines._is_coroutine
    __signature__ = inspect.Signature([inspect.Parameter("message", inspect.Parameter.POSITIONAL_OR_KEYWORD)])

    async def wait(self):
        self.waiter = self.server.loop.create_future()
        try:
            await self.waiter
        finally:
            self.waiter = None

    def wake(self):
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    # Whether the app runs on when its client leaves (see cancel()).
    runs_on_after_disconnect = False

    def cancel(self, reason=b"timeout"):
        """The host is done with the stream.

        b"disconnect", for an HTTP request: the client went away. The app
        learns it from receive() (http.disconnect) and runs on, as under
        uvicorn: what it does after its client left (a write to a database, a
        background task) is not lost. What it sends from then on goes nowhere.
        The host still bounds the request (timeout_ms until a response starts,
        else stream_idle_timeout_ms) and cancels it with b"timeout" past that.

        Otherwise (a deadline passed, or the instance is closing): an app
        listening on receive() learns it from there and is cancelled if it
        has not finished within _DISCONNECT_GRACE; any other is cancelled now.
        (A WebSocket whose client left: see _WebSocket.cancel.)"""
        listening = self.waiter is not None
        self.disconnected = True
        self.wake()
        self.drained(0)  # a send() held back by flow control returns
        if (reason == b"disconnect" and self.runs_on_after_disconnect) or self.task is None or self.task.done():
            return
        if listening:
            self.server.loop.call_later(_DISCONNECT_GRACE, self.cancel_task)
        else:
            self.cancel_task()

    def drained(self, count):
        """Flow control: `count` more bytes of the response reached the client."""

    def input_closed(self):
        """The client closed its sending side (INPUT_CLOSED; HTTP requests only)."""

    def cancel_task(self):
        if self.task is None or self.task.done():
            return
        if _waits_on_thread(self.task):
            self.server.recycle(f"a cancelled request of {self.server.function} goes on in a thread, which "
                                f"cannot be stopped")
        if not self.running and not self.task.cancelling():
            # Cancelled before its first step: run() never starts, so its
            # final frame and the server's bookkeeping are done from here
            # (once, however many cancels come).
            self.task.add_done_callback(self.cancelled_before_start)
        self.task.cancel()

    async def run(self, app, scope):
        """The task of the stream. Every way out ends the stream (its final
        frame) and tells the server, with no done-callback per request: even
        when reporting the app's failure fails (a closed stderr)."""
        self.running = True
        kind = scope["type"]  # before the app runs: it may change its scope
        try:
            # The stream is the app's send callable: send(message) is
            # self.__call__ (the C send of an HTTP exchange, exchange.h).
            await app(scope, self.receive, self)
        except asyncio.CancelledError:
            self.abort()
        except BaseException:  # noqa: BLE001 - the app's failure is reported, never propagated
            try:
                print(f"coil: exception in ASGI application {self.server.function} ({kind}):", file=sys.stderr)
                traceback.print_exc()
            finally:
                self.failed()
        else:
            self.returned()
        finally:
            try:
                if not self.finished:
                    self.abort()
            finally:
                self.server.finished(self)

    def cancelled_before_start(self, task):
        if not self.finished:
            self.abort()
        self.server.finished(self)

    # What each kind of stream does when its app was cancelled, raised, or returned.
    def abort(self):
        raise NotImplementedError

    def failed(self):
        raise NotImplementedError

    def returned(self):
        raise NotImplementedError


class _Exchange(_coil.ExchangeBase, _Stream):
    """One request: its receive()/send() callables and its response state.

    Made as _Exchange(server, stream, body, end). The C base
    (src/python/exchange.h) holds the fields and has put(); the exchange
    called is the app's send(), which takes http.response.start and a bytes
    body up to _SLICE itself, and runs send_slow_path() for everything else."""

    runs_on_after_disconnect = True

    __slots__ = ()

    # receive() ------------------------------------------------------------

    async def receive(self):
        while True:
            chunks = self.chunks
            if chunks:
                # What arrived since the app last asked goes as one message, as
                # under uvicorn: an app slower than the upload (a multipart
                # parser, a thread hop per message) takes fewer, larger pieces.
                if len(chunks) == 1:
                    chunk = chunks.pop()
                else:
                    chunk = b"".join(chunks)
                    chunks.clear()
                if not self.body_done:
                    # Flow control (frame.h): the host reads on as the app takes.
                    self.body_taken += len(chunk)
                    if self.body_taken >= _BODY_REPORT and not self.finished:
                        _coil.put_frame(self.server.out, DRAINED, self.stream, self.body_taken.to_bytes(8, "little"))
                        self.body_taken = 0
                        self.server.schedule_flush()
                return {"type": "http.request", "body": chunk,
                        "more_body": not (self.body_done and not self.chunks)}
            if self.finished or self.told_disconnect:
                return _DISCONNECT
            if not self.body_done and not self.body_wanted:
                # A client that sent "Expect: 100-continue" is invited to
                # send its body now, not before the app wants it.
                self.body_wanted = True
                _coil.put_frame(self.server.out, CONTINUE, self.stream, b"")
                self.server.schedule_flush()
            await self.wait()

    def client_closed(self, code):
        self.cancel(b"disconnect")

    def input_closed(self):
        """The client closed its sending side after its request: it left, or
        only half-closed. receive() says http.disconnect, as under uvicorn
        (which cannot tell them apart either); unlike uvicorn, what the app
        sends still goes out, for a client that half-closed."""
        self.client_done = True
        self.wake()

    def feed(self, data, end, text=False, more=False):
        if data or end:
            self.chunks.append(data)
        self.body_done = end
        self.wake()

    # send() ---------------------------------------------------------------

    async def send_slow_path(self, message):
        """What send(message) does (the C fast path takes the usual messages,
        to the same effect: keep the two in step)."""
        kind = message["type"]
        if kind == "http.response.body":
            if not self.started:
                raise RuntimeError("http.response.body sent before http.response.start")
            if self.complete and not self.disconnected:
                raise RuntimeError("http.response.body sent after the response was complete")
            if self.finished or self.disconnected:
                return
            body = message.get("body", b"")
            if body is None:  # as uvicorn
                body = b""
            more = message.get("more_body", False)
            if len(body) <= _SLICE:
                self.put(body, more)
                if more and self.unsent > _WINDOW:
                    await self.wait_for_room()
                return
            # A large body goes out a slice at a time, as the client takes it.
            view = memoryview(body).cast("B")
            for start in range(0, len(view), _SLICE):
                if self.finished or self.disconnected:
                    return
                piece_more = more or start + _SLICE < len(view)
                self.put(view[start:start + _SLICE], piece_more)
                if piece_more and self.unsent > _WINDOW:
                    await self.wait_for_room()
        elif kind == "http.response.start":
            if self.started:
                # The first head goes out, then the stream is reset: the
                # client sees a broken response and the connection closes.
                if not self.head_sent and not self.disconnected:
                    self.put_head()
                raise RuntimeError("http.response.start sent twice")
            # Encoded now, as uvicorn does: a mistake raises here, and later
            # changes to the app's headers do not go out.
            head = _coil.encode_head(message["status"], message.get("headers", ()))
            if self.started:  # app code run by the encoding (the headers' iteration) started meanwhile
                raise RuntimeError("http.response.start sent twice")
            self.head = head
            self.started = True
            self.head_waiting()
        elif kind == "http.response.trailers":
            pass
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for an http request")

    async def wait_for_room(self):
        # Every send() waiting has a future of its own in self.room (an app
        # may send parts from several tasks at once).
        while self.unsent > _WINDOW and not (self.finished or self.disconnected):
            room = self.server.loop.create_future()
            if self.room is None:
                self.room = []
            self.room.append(room)
            try:
                await room
            finally:
                self.room.remove(room)

    def drained(self, count):
        """Also called with 0 when the stream ends (end_abnormally, the C
        put()): send()s waiting for room in other tasks then return."""
        self.unsent -= count
        if self.room and (self.unsent <= _WINDOW or self.disconnected or self.finished):
            for room in self.room:
                if not room.done():
                    room.set_result(None)

    # the task -------------------------------------------------------------

    def failed(self):
        self.end_abnormally(f"internal error in function {self.server.function}\n")

    @property
    def told_disconnect(self):
        """receive() says http.disconnect: the client left, or closed its
        sending side. An app may then stop without answering: no error."""
        return self.disconnected or self.client_done

    def returned(self):
        if not self.started and not self.told_disconnect:
            print(f"coil: ASGI application {self.server.function} returned without sending a response",
                  file=sys.stderr)
            self.end_abnormally(f"internal error in function {self.server.function}\n")
        elif not self.finished:
            if not self.told_disconnect:
                print(f"coil: ASGI application {self.server.function} returned before finishing its response "
                      f"(no http.response.body with more_body false)", file=sys.stderr)
            self.end_abnormally(None)

    def abort(self):
        if not (self.finished or self.told_disconnect):
            # Not a cancel of coil's (a deadline, the client leaving): the app's own.
            print(f"coil: the request's task in ASGI application {self.server.function} was cancelled "
                  f"(CancelledError) before its response was complete", file=sys.stderr)
        self.end_abnormally(None)

    def end_abnormally(self, error_body):
        """Ends the stream: a 500 if nothing reached the wire yet, else RESET."""
        if self.finished:
            return
        self.finished = True
        out = self.server.out
        if error_body is not None and not self.head_sent and not self.disconnected:
            _coil.put_response(out, self.stream, 500, ((b"content-type", b"text/plain; charset=utf-8"),),
                               error_body.encode(), True)
        else:
            _coil.put_frame(out, RESET, self.stream, b"")
        self.server.schedule_flush()
        self.drained(0)


def _waits_on_thread(task):
    """Whether the request run by `task` waits on work running in another
    thread: somewhere down the chain of what the task awaits (coroutines,
    the futures and tasks they await or hold, asyncio.gather's children), or
    in a task of its own that holds the request's scope (an HTTP middleware
    runs the endpoint in a task group). See _ANYIO_THREAD_WAIT.
    Called when a timed-out request is cancelled, never per request."""
    seen = set()
    if _chain_waits_on_thread(task.get_coro(), seen):
        return True
    frame = getattr(task.get_coro(), "cr_frame", None)
    scope = frame.f_locals.get("scope") if frame is not None else None  # _Stream.run(app, scope)
    if scope is None:
        return False
    for other in asyncio.all_tasks(task.get_loop()):
        if other is not task and not other.done() and _chain_holds(other.get_coro(), scope):
            if _chain_waits_on_thread(other.get_coro(), seen):
                return True
    return False


_CHAIN_LIMIT = 256  # awaitables looked at per question, at most


def _coroutine_frames(coroutine):
    """The frames of a chain of awaiting coroutines, outermost first."""
    for _ in range(_CHAIN_LIMIT):
        frame = getattr(coroutine, "cr_frame", None)
        if frame is None:
            return
        yield frame, coroutine
        coroutine = coroutine.cr_await


def _chain_holds(coroutine, obj):
    return any(any(value is obj for value in frame.f_locals.values()) for frame, _ in _coroutine_frames(coroutine))


def _chain_waits_on_thread(coroutine, seen):
    for frame, current in _coroutine_frames(coroutine):
        if len(seen) > _CHAIN_LIMIT:
            return False
        suffix, name = _ANYIO_THREAD_WAIT
        if frame.f_code.co_name == name and frame.f_code.co_filename.endswith(suffix):
            return True
        # Futures it holds (asyncio.wait_for's inner task, shield's), and the one it awaits.
        futures = [value for value in frame.f_locals.values() if isinstance(value, asyncio.Future)]
        awaited = current.cr_await
        if awaited is not None and getattr(awaited, "cr_frame", None) is None:
            futures.extend(r for r in gc.get_referents(awaited) if isinstance(r, asyncio.Future))  # `await future`
            if isinstance(awaited, asyncio.Future):
                futures.append(awaited)
        if any(_future_waits_on_thread(future, seen) for future in futures):
            return True
    return False


def _future_waits_on_thread(future, seen):
    if future.done() or id(future) in seen:
        return False
    seen.add(id(future))
    if isinstance(future, asyncio.Task):
        return _chain_waits_on_thread(future.get_coro(), seen)
    children = getattr(future, "_children", None)  # asyncio.gather's
    if children and any(isinstance(c, asyncio.Future) and _future_waits_on_thread(c, seen) for c in children):
        return True
    # asyncio.wrap_future (run_in_executor, to_thread) chains the future to the executor's.
    for callback in getattr(future, "_callbacks", None) or ():
        function = callback[0] if isinstance(callback, tuple) else callback
        if getattr(function, "__name__", "") == "_call_check_cancel":
            return True
    return False


def _valid_close_code(code):
    """A code an endpoint may send in a close frame (RFC 6455 7.4, and the IANA registry)."""
    return (isinstance(code, int) and not isinstance(code, bool)  # an IntEnum is a code too
            and (1000 <= code <= 1003 or 1007 <= code <= 1014 or 3000 <= code <= 4999))


class _WebSocket(_Stream):
    """One WebSocket session: the websocket scope's receive()/send()."""

    __slots__ = ("inbox", "connect_delivered", "close_code", "state", "parts", "taken")

    def __init__(self, server, stream):
        super().__init__(server, stream)
        self.inbox = []  # (message, its size as the host sent it)
        self.taken = 0   # bytes of messages the app took, not yet reported to the host
        self.parts = []  # the parts of a client message so far (frame.h: kFlagMore)
        self.connect_delivered = False
        self.close_code = 1006
        self.state = "connecting"  # then "connected", then "closed"

    async def receive(self):
        if not self.connect_delivered:
            self.connect_delivered = True
            return {"type": "websocket.connect"}
        while True:
            if self.inbox:
                message, size = self.inbox.pop(0)
                # Flow control toward the app (frame.h): the host stops reading
                # the client while too much is unread here; it hears of what
                # was taken a MiB at a time.
                self.taken += size
                if self.taken >= _WINDOW:
                    _coil.put_frame(self.server.out, DRAINED, self.stream, self.taken.to_bytes(8, "little"))
                    self.taken = 0
                    self.server.schedule_flush()
                return message
            if self.disconnected or self.state == "closed":
                # The client left, or the app closed: the stream is over
                # (the host ends the close handshake without the app).
                return {"type": "websocket.disconnect", "code": self.close_code}
            await self.wait()

    def feed(self, data, end, text, more=False):
        if more or self.parts:
            self.parts.append(data)
            if more:
                return
            data = b"".join(self.parts)
            self.parts = []
        if text:
            self.inbox.append(({"type": "websocket.receive", "text": data.decode("utf-8", "replace")}, len(data)))
        else:
            self.inbox.append(({"type": "websocket.receive", "bytes": data}, len(data)))
        self.wake()

    def client_closed(self, code):
        self.disconnected = True
        self.close_code = code
        self.wake()

    def cancel(self, reason=b"timeout"):
        if reason != b"disconnect":
            return super().cancel(reason)
        # The client left: as under uvicorn, receive() says websocket.disconnect
        # and send() raises, so that an app's own cleanup after either runs
        # (a push loop's `except`, not only its `finally`). One that does
        # neither within _WS_GONE_GRACE is cancelled.
        self.disconnected = True
        self.wake()
        if self.task is not None and not self.task.done():
            self.server.loop.call_later(_WS_GONE_GRACE, self.cancel_task)

    async def send(self, message):
        kind = message["type"]
        out = self.server.out
        if kind == "websocket.send":
            if self.disconnected:
                raise ClientDisconnected(f"the WebSocket client has gone (close code {self.close_code})")
            if self.state != "connected":
                raise RuntimeError(f"websocket.send while the socket is {self.state}")
            text = message.get("text")
            if text is not None:
                _coil.put_ws_message(out, self.stream, text.encode("utf-8"), True)
            else:
                _coil.put_ws_message(out, self.stream, message.get("bytes") or b"", False)
        elif kind == "websocket.accept":
            if self.state != "connecting":
                raise RuntimeError("websocket.accept sent twice")
            headers = list(message.get("headers") or ())
            subprotocol = message.get("subprotocol")
            if subprotocol:
                headers.append((b"sec-websocket-protocol", subprotocol.encode("latin-1")))
            _coil.put_response(out, self.stream, 101, headers, b"", False)
            self.state = "connected"
        elif kind == "websocket.close":
            code = message.get("code", 1000)
            if self.state == "connected" and not _valid_close_code(code):  # before accept it is a 403 anyway
                raise RuntimeError(f"invalid WebSocket close code {code!r} (1000-1003, 1007-1014 or 3000-4999)")
            if self.finished:
                return
            if self.state == "connecting":
                # Closing before accepting refuses the handshake (ASGI: HTTP 403).
                _coil.put_response(out, self.stream, 403, (), b"", True)
            else:
                _coil.put_ws_close(out, self.stream, int(code), message.get("reason") or "")
                if not self.disconnected:
                    self.close_code = int(code)  # what the client echoes, closing
            self.state = "closed"
            self.finished = True
            self.wake()  # a receive() waiting in another task
        else:
            raise RuntimeError(f"unexpected ASGI message type {kind!r} for a websocket")
        self.server.schedule_flush()

    __call__ = send  # the app's send callable is the stream (_Stream.run)

    def failed(self):
        self.end(1011)

    def returned(self):
        self.end(self.close_code if self.disconnected else 1000)

    def abort(self):
        self.end(None)

    def end(self, code):
        """The stream's final frame, unless the app already closed."""
        if self.finished:
            return
        self.finished = True
        out = self.server.out
        if self.state == "connecting":
            if code is None:
                _coil.put_frame(out, RESET, self.stream, b"")
            else:
                _coil.put_response(out, self.stream, 500 if code == 1011 else 403, (), b"", True)
        else:
            _coil.put_ws_close(out, self.stream, code if code is not None else 1001, "")
        self.state = "closed"
        self.server.schedule_flush()
