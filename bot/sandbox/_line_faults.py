"""Scripted trouble for the LINE emulator: an error answered instead of a request (or after carrying it
out, as when LINE took a request but its answer was lost), and answers held back as if the process had
died right after LINE took the request."""

from __future__ import annotations

import asyncio
import random

from bot.sandbox._line_state import ApiError, Fault, RandomFault, fault_body


class ScriptedFaults:
    """What a test has asked the emulator to get wrong; :class:`~bot.sandbox.line_emulator.LineEmulator`
    consults it for every request."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._random_faults: list[RandomFault] = []
        self._holds: list[str] = []
        self._release = asyncio.Event()
        #: set while a response to an accepted request is being held back (see ``hold_after_accept``)
        self.holding = asyncio.Event()

    def fail_next(
        self, status: int, *, times: int = 1, path_contains: str = "", retry_after: int | None = None
    ) -> None:
        """Answer `status` to the next `times` matching requests without delivering anything."""
        if times < 1:
            raise ValueError("times must be >= 1")
        self._faults.append(Fault(status, times, path_contains, retry_after))

    def fail_randomly(
        self, status: int, share: float, *, path_contains: str = "", retry_after: int | None = None, seed: int = 0,
        after_accept: bool = False,
    ) -> None:
        """Answer `status` to about `share` of matching requests (after any `fail_next`), until a full
        `reset`; seeded, so a load test sees the same faults each run. `after_accept`: carry the
        request out first, then answer the error (the answer was lost, the send was not)."""
        if not 0.0 <= share <= 1.0:
            raise ValueError("share must be between 0 and 1")
        self._random_faults.append(RandomFault(status, share, random.Random(seed), path_contains, retry_after,
                                               after_accept))

    def hold_after_accept(self, path_contains: str = "multicast") -> None:
        """Carry out the next matching request, then hold its answer back until `release` (or
        `stop`): the client never hears that LINE took it, as when the process dies right then."""
        self._holds.append(path_contains)
        self._release.clear()

    def release(self) -> None:
        """Let held answers go (and stop holding)."""
        self._holds.clear()
        self._release.set()

    def _take_hold(self, path: str) -> bool:
        for n, part in enumerate(self._holds):
            if part in path:
                del self._holds[n]
                return True
        return False

    def _inject_fault(self, path: str) -> RandomFault | None:
        """Raise a scripted fault now, or return one to raise after the request is carried out."""
        for fault in self._faults:
            if fault.path_contains in path:
                fault.times -= 1
                if fault.times <= 0:
                    self._faults.remove(fault)
                self._raise_fault(fault.status, fault.retry_after)
        for chance in self._random_faults:
            if chance.path_contains in path and chance.rng.random() < chance.share:
                if chance.after_accept:
                    return chance
                self._raise_fault(chance.status, chance.retry_after)
        return None

    @staticmethod
    def _raise_fault(status: int, retry_after: int | None) -> None:
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        raise ApiError(status, fault_body(status)["message"], headers=headers)
