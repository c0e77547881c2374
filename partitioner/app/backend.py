"""Where evaluations run: in this process, on a local process pool, or as Ray tasks. One backend serves
`partition explore` (designs) and `partition train` (RL rollouts: repair + simulation of each proposal).

Every backend has the same three calls:
    submit(fn, *args) -> concurrent.futures.Future     (explore's ask/tell loop waits on whichever finishes first)
    map(fn, items)    -> [fn(*args) for args in items]  (in order, whatever order they finished in; train's rollouts)
    close()
so which backend ran a computation never changes its result, only how long it took. Functions and arguments
travel by pickle, so `fn` must be a module-level function (or a picklable callable object).

Ray is optional (pip install 'chiplet-partitioner[ray]'): `--ray local` starts a private instance here, `--ray auto`
joins the cluster `ray start --head` runs on this machine, `--ray HOST:PORT` (or ray://HOST:PORT) a remote one.
"""
from __future__ import annotations

import concurrent.futures as cf
import os
from typing import Any, Callable, Sequence

from partitioner.core.errors import UserError

RAY_MISSING_FIX = "pip install 'chiplet-partitioner[ray]' (or 'ray>=2.9'), or drop --ray"


class LocalPool:
    """A process pool; one worker needs no pool (runs in this process, which keeps tests and profiles simple).

    Workers are spawned, not forked (a fork of a process that has run onnxruntime can crash). `initializer(*initargs)`
    runs once in each worker (explore hands each worker the loaded graph that way instead of importing it again)."""

    def __init__(self, workers: int, initializer: Callable | None = None, initargs: tuple = ()) -> None:
        import multiprocessing as mp

        self.pool = cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=initializer,
                                           initargs=initargs) if workers > 1 else None

    def submit(self, fn: Callable, *args) -> cf.Future:
        if self.pool is not None:
            return self.pool.submit(fn, *args)
        fut: cf.Future = cf.Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:   # noqa: BLE001 - handed to the caller through the future, as a pool would
            fut.set_exception(exc)
        return fut

    def map(self, fn: Callable, items: Sequence[tuple]) -> list:
        if self.pool is None:
            return [fn(*args) for args in items]
        return [f.result() for f in [self.pool.submit(fn, *args) for args in items]]

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)


class RayBackend:
    """Ray tasks; ObjectRef.future() gives a concurrent.futures.Future, so a driver loop is the same as locally.

    num_cpus: the CPUs a private instance (`local`) may use, i.e. how many tasks run at once; ignored when joining
    a running cluster (its own resources decide)."""

    def __init__(self, address: str, num_cpus: int | None = None) -> None:
        ray = require_ray()
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            local = address == "local"
            check_ray_address(address)
            try:
                ray.init(address=None if local else address, num_cpus=num_cpus if local else None,
                         include_dashboard=False, log_to_driver=False, configure_logging=False)
            except (ConnectionError, ValueError, RuntimeError) as exc:
                raise UserError(f"cannot connect to Ray at {address!r} ({exc})",
                                "start a cluster (`ray start --head`), pass its address, or use --ray local")
        self._remote: dict[Any, Any] = {}

    def _task(self, fn: Callable):
        if fn not in self._remote:
            self._remote[fn] = self.ray.remote(fn)
        return self._remote[fn]

    def submit(self, fn: Callable, *args) -> cf.Future:
        return self._task(fn).remote(*args).future()

    def map(self, fn: Callable, items: Sequence[tuple]) -> list:
        """All items in flight at once (Ray queues what its CPUs cannot run yet). An argument object shared by
        several items (the graph, the hardware, the reward function) goes into the object store once per call."""
        task, refs = self._task(fn), {}

        def shared(arg):
            if isinstance(arg, (int, float, str, bool, type(None))):
                return arg
            if id(arg) not in refs:
                refs[id(arg)] = (arg, self.ray.put(arg))   # keep arg alive so its id is not reused in this call
            return refs[id(arg)][1]

        counts: dict[int, int] = {}
        for args in items:
            for a in args:
                counts[id(a)] = counts.get(id(a), 0) + 1
        calls = [task.remote(*(shared(a) if counts[id(a)] > 1 else a for a in args)) for args in items]
        return self.ray.get(calls)

    def close(self) -> None:
        if self.started:
            self.ray.shutdown()


def require_ray():
    """The ray module, or the one-line error saying how to install it."""
    try:
        import ray
    except ImportError:
        raise UserError("--ray needs the ray package, which is not installed", RAY_MISSING_FIX)
    return ray


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """A TCP connect to HOST:PORT (or ray://HOST:PORT) first: ray.init on an address nobody answers retries for
    minutes before it gives up, which looks like a hang."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise UserError(f"--ray {address!r} is not local, auto or HOST:PORT",
                        "pass --ray local, --ray auto or the head node's address, e.g. --ray 10.0.0.5:6379")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(f"cannot reach Ray at {address!r} ({exc.strerror or exc})",
                        "start the cluster (`ray start --head`) and pass its address, or use --ray local")


def check_workers(workers: int) -> None:
    if workers < 1:
        raise UserError(f"--workers must be at least 1, got {workers}", "pass 1 or more")
    if workers > (os.cpu_count() or 1) * 4:
        raise UserError(f"--workers {workers} is far above this machine's {os.cpu_count()} cores",
                        "pass at most the number of cores")


def check_ray_address(address: str | None) -> None:
    """Reject a --ray value that is empty, malformed or names an address nobody answers, before anything starts."""
    if address is None or address in ("local", "auto"):
        return
    if not address.strip():
        raise UserError("--ray is empty", "pass --ray local, --ray auto or --ray HOST:PORT")
    check_reachable(address)


def make_backend(workers: int, ray_address: str | None, initializer: Callable | None = None,
                 initargs: tuple = ()):
    """LocalPool(workers) when ray_address is None, else Ray (a private instance of `workers` CPUs for 'local')."""
    check_workers(workers)
    check_ray_address(ray_address)
    if ray_address is None:
        return LocalPool(workers, initializer, initargs)
    return RayBackend(ray_address, num_cpus=workers)
