"""Two asyncio building blocks the core and the namespaces share.

* :class:`SharedAttempt` — one run of a coroutine that every concurrent caller awaits: the
  first caller starts it, later callers wait for the same run, a caller that is cancelled
  leaves the run going for the others, and a run that fails is forgotten so that the next
  caller tries again. A run that succeeded is remembered — later calls return its result at
  once — unless made with ``remember=False``, for work that must run again once done (bringing
  something in line with a state that keeps changing). (Starting a router, subscribing its
  wildcard, subscribing a group, starting a hub, settling a hub's scope.)
* :class:`BackgroundTasks` — work a component starts and does not await, that it must finish
  when it closes; a task that fails is logged (it has nobody to raise to), never lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Generic, TypeVar

_T = TypeVar("_T")


class SharedAttempt(Generic[_T]):
    """One shared run of ``start()``; see the module docstring.

    Cancellation-safe: every caller awaits the run through :func:`asyncio.shield`, so cancelling
    one caller never cancels the run others wait for. Only :meth:`cancel` cancels the run.
    """

    __slots__ = ("_remember", "_result", "_running", "_start", "_succeeded")

    def __init__(
        self, start: Callable[[], Coroutine[Any, Any, _T]], *, remember: bool = True
    ) -> None:
        self._start = start
        self._remember = remember
        self._running: asyncio.Future[_T] | None = None
        self._succeeded = False
        self._result: _T | None = None

    @property
    def succeeded(self) -> bool:
        """Whether a run has completed without an error (then calls return its result at once)."""
        return self._succeeded

    @property
    def running(self) -> bool:
        return self._running is not None

    async def __call__(self) -> _T:
        if self._succeeded:
            return self._result  # type: ignore[return-value]
        running = self._running
        if running is None:
            running = self._running = asyncio.ensure_future(self._start())
            # Registered before any caller's shield: the outcome is recorded before they resume.
            running.add_done_callback(self._settle)
        return await asyncio.shield(running)

    def _settle(self, running: asyncio.Future[_T]) -> None:
        if self._running is running:
            self._running = None
        # cancelled() first: exception() of a cancelled future raises CancelledError.
        if not running.cancelled() and running.exception() is None and self._remember:
            self._succeeded = True
            self._result = running.result()

    def forget(self) -> None:
        """Forget a success: the next call runs ``start()`` again."""
        self._succeeded = False
        self._result = None

    async def wait(self) -> None:
        """Wait for a run in progress to end, however it ends; never raises its error."""
        running = self._running
        if running is not None:
            await asyncio.gather(asyncio.shield(running), return_exceptions=True)

    async def cancel(self) -> None:
        """Cancel a run in progress (its waiters get ``CancelledError``) and wait for it."""
        running, self._running = self._running, None
        if running is not None:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)


class BackgroundTasks:
    """Tasks started and not awaited; :meth:`close` cancels and awaits what is left."""

    __slots__ = ("_logger", "_tasks", "_what")

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what  # for the log line of a task that failed
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, work: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        log_failure(self._logger, self._what, task)

    async def wait(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for the running tasks to finish by themselves."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)

    async def close(self) -> None:
        while self._tasks:  # a task being cancelled may spawn another: repeat until none is left
            tasks = list(self._tasks)
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            self._tasks.difference_update(tasks)


def log_failure(logger: logging.Logger, what: str, task: asyncio.Future[Any]) -> None:
    """Log the error ``task`` ended with, if any (cancelled tasks are not failures)."""
    if not task.cancelled() and task.exception() is not None:
        logger.error("channels_neffos: %s failed", what, exc_info=task.exception())
