"""An HTTP server for UM-Bridge models (protocol version 1.0) on one address, stoppable.

It answers what ``umbridge.HTTPModel`` asks (``/Info``, ``/ModelInfo``, ``/InputSizes``,
``/OutputSizes``, ``/Evaluate``, ``/Gradient``, ``/ApplyJacobian``, ``/ApplyHessian``) for
``umbridge.Model`` objects, as ``umbridge.serve_models`` does, with three differences that
``pdeflow serve-model`` needs: it binds the given host only (``serve_models`` runs aiohttp's
``run_app`` without a host, so it listens on every interface); a refused input
(``model_server.InputError``) or a failed evaluation comes back as a UM-Bridge error, which
``HTTPModel`` raises with its message (``serve_models`` answers any exception with a bare
HTTP 500 that its client cannot parse); and it runs in a background thread that ``stop`` ends,
so a test or Ctrl-C stops it cleanly. One evaluation runs at a time, in a daemon thread: a
long solve in progress does not hold up the process's exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading

from aiohttp import web

PROTOCOL_VERSION = 1.0
# Seconds the server waits for open requests when it stops.
SHUTDOWN_TIMEOUT = 1.0
# Largest request body: a gradient's sensitivity vector is as long as a whole trajectory (a 2D
# field of 41 frames on 256^2 points is 2.7 million numbers, about 60 MB of JSON).
MAX_REQUEST_BYTES = 1 << 30


class RequestError(Exception):
    """A request the server refuses: UM-Bridge error ``kind``, HTTP ``status``."""

    def __init__(self, kind: str, message: str, status: int = 400):
        super().__init__(message)
        self.kind, self.status = kind, status


def _error(kind: str, message: str, status: int) -> web.Response:
    return web.json_response({"error": {"type": kind, "message": message}}, status=status)


class ModelServer:
    """Serve ``models`` (``umbridge.Model``) over HTTP at ``host:port``; started once.

    Args:
        models: the models, each under its ``name``.
        host: the address to bind; ``127.0.0.1`` answers this machine only.
        port: the TCP port; 0 picks a free one (see ``url`` after ``start``).
        input_errors: exception types that mean a refused input (UM-Bridge ``InvalidInput``,
            HTTP 400); any other exception of a model is a ``ModelError`` (HTTP 500).
    """

    def __init__(self, models, host: str = "127.0.0.1", port: int = 4242, input_errors=()):
        self.models = {m.name: m for m in models}
        self.host, self.port = host, port
        self.input_errors = tuple(input_errors)
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping: asyncio.Event | None = None
        self._ready = threading.Event()
        self._serving = False
        self._failure: BaseException | None = None
        self._busy = threading.Lock()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> str:
        """Bind and serve in a background thread; returns the URL.

        Raises:
            OSError: the address cannot be bound (in use, not this machine's).
        """
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.create_server((self.host, self.port), family=family)
        self.port = sock.getsockname()[1]
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name="umbridge-server", daemon=True
        )
        self._thread.start()
        self._ready.wait()
        if not self._serving:
            self._thread.join()
            self._thread = None
            raise RuntimeError(f"the UM-Bridge server did not start: {self._failure!r}")
        return self.url

    def stop(self) -> None:
        """Stop serving and wait for the server thread (open requests get ``SHUTDOWN_TIMEOUT``)."""
        if self._thread is None:
            return
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):  # the loop has already ended
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join()
        self._thread = None

    def serve_forever(self) -> None:
        """Serve until Ctrl-C (or ``stop`` from another thread), then stop."""
        if self._thread is None:
            self.start()
        thread = self._thread
        try:
            while thread.is_alive():  # a join with a timeout lets Ctrl-C through
                thread.join(0.5)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self) -> ModelServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- the event loop, in the server thread ----------------------------------------------
    def _run(self, sock: socket.socket) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main(sock))
        except BaseException as err:  # said by ``start`` when it happens there
            self._failure = err
        finally:
            self._serving = False
            self._ready.set()  # also when the start failed
            loop.close()

    async def _main(self, sock: socket.socket) -> None:
        self._stopping = asyncio.Event()
        app = web.Application(client_max_size=MAX_REQUEST_BYTES)
        app.add_routes(
            [
                web.get("/Info", self._info),
                web.post("/ModelInfo", self._handler(self._model_info)),
                web.post("/InputSizes", self._handler(self._input_sizes)),
                web.post("/OutputSizes", self._handler(self._output_sizes)),
                web.post("/Evaluate", self._handler(self._evaluate)),
                web.post("/Gradient", self._handler(self._gradient)),
                web.post("/ApplyJacobian", self._handler(self._apply_jacobian)),
                web.post("/ApplyHessian", self._handler(self._apply_hessian)),
            ]
        )
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        try:
            await web.SockSite(runner, sock).start()
            self._serving = True
            self._ready.set()
            await self._stopping.wait()
        finally:
            await runner.cleanup()

    async def _info(self, request: web.Request) -> web.Response:
        return web.json_response({"protocolVersion": PROTOCOL_VERSION, "models": list(self.models)})

    def _handler(self, answer):
        """A route from ``answer(body, model) -> dict`` with UM-Bridge error responses."""

        async def handle(request: web.Request) -> web.Response:
            try:
                try:
                    body = await request.json()
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise RequestError("InvalidInput", "the request body is not JSON") from None
                if not isinstance(body, dict) or body.get("name") not in self.models:
                    name = body.get("name") if isinstance(body, dict) else None
                    raise RequestError(
                        "ModelNotFound", f"model {name!r} not found; served: {list(self.models)}"
                    )
                return web.json_response(await answer(body, self.models[body["name"]]))
            except RequestError as err:
                return _error(err.kind, str(err), err.status)
            except self.input_errors as err:
                return _error("InvalidInput", str(err), 400)
            except web.HTTPException:  # aiohttp's own answers (a body over the size limit)
                raise
            except Exception as err:  # the model failed: say why, keep serving
                return _error("ModelError", f"{type(err).__name__}: {err}", 500)

        return handle

    async def _in_thread(self, fn, *args):
        """``fn(*args)`` in a daemon thread, one call at a time (the models share torch's
        threads and state)."""
        loop = asyncio.get_running_loop()
        done = loop.create_future()

        def settle(result, error) -> None:
            if done.done():
                return
            if error is None:
                done.set_result(result)
            else:
                done.set_exception(error)

        def work() -> None:
            with self._busy:
                try:
                    result, error = fn(*args), None
                except Exception as err:
                    result, error = None, err
            with contextlib.suppress(RuntimeError):  # the server stopped meanwhile
                loop.call_soon_threadsafe(settle, result, error)

        threading.Thread(target=work, name="umbridge-model", daemon=True).start()
        return await done

    @staticmethod
    def _config(body: dict) -> dict:
        return body.get("config") or {}

    @staticmethod
    def _fields(body: dict, *keys: str) -> tuple:
        missing = [k for k in keys if k not in body]
        if missing:
            raise RequestError("InvalidInput", f"the request lacks {', '.join(missing)}")
        return tuple(body[k] for k in keys)

    async def _model_info(self, body: dict, model) -> dict:
        return {
            "support": {
                "Evaluate": model.supports_evaluate(),
                "Gradient": model.supports_gradient(),
                "ApplyJacobian": model.supports_apply_jacobian(),
                "ApplyHessian": model.supports_apply_hessian(),
            }
        }

    async def _input_sizes(self, body: dict, model) -> dict:
        return {"inputSizes": model.get_input_sizes(self._config(body))}

    async def _output_sizes(self, body: dict, model) -> dict:
        return {"outputSizes": model.get_output_sizes(self._config(body))}

    def _require(self, supported: bool, what: str) -> None:
        if not supported:
            raise RequestError("UnsupportedFeature", f"{what} is not supported by this model")

    @staticmethod
    def _check_wrt(model, out_wrt, in_wrt, config: dict) -> None:
        n_in, n_out = len(model.get_input_sizes(config)), len(model.get_output_sizes(config))
        valid = all(isinstance(k, int) for k in (out_wrt, in_wrt))
        if not (valid and 0 <= in_wrt < n_in and 0 <= out_wrt < n_out):
            raise RequestError(
                "InvalidInput",
                f"inWrt must be in [0, {n_in - 1}] and outWrt in [0, {n_out - 1}]; "
                f"got {in_wrt!r} and {out_wrt!r}",
            )

    async def _evaluate(self, body: dict, model) -> dict:
        self._require(model.supports_evaluate(), "Evaluate")
        (parameters,) = self._fields(body, "input")
        return {"output": await self._in_thread(model.__call__, parameters, self._config(body))}

    async def _gradient(self, body: dict, model) -> dict:
        self._require(model.supports_gradient(), "Gradient")
        config = self._config(body)
        out_wrt, in_wrt, parameters, sens = self._fields(body, "outWrt", "inWrt", "input", "sens")
        self._check_wrt(model, out_wrt, in_wrt, config)
        size = model.get_output_sizes(config)[out_wrt]
        if not isinstance(sens, list) or len(sens) != size:
            raise RequestError("InvalidInput", f"sens must be a list of {size} numbers")
        args = (out_wrt, in_wrt, parameters, sens, config)
        return {"output": await self._in_thread(model.gradient, *args)}

    async def _apply_jacobian(self, body: dict, model) -> dict:
        self._require(model.supports_apply_jacobian(), "ApplyJacobian")
        config = self._config(body)
        out_wrt, in_wrt, parameters, vec = self._fields(body, "outWrt", "inWrt", "input", "vec")
        self._check_wrt(model, out_wrt, in_wrt, config)
        args = (out_wrt, in_wrt, parameters, vec, config)
        return {"output": await self._in_thread(model.apply_jacobian, *args)}

    async def _apply_hessian(self, body: dict, model) -> dict:
        self._require(model.supports_apply_hessian(), "ApplyHessian")
        keys = ("outWrt", "inWrt1", "inWrt2", "input", "sens", "vec")
        args = (*self._fields(body, *keys), self._config(body))
        return {"output": await self._in_thread(model.apply_hessian, *args)}
