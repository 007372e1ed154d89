"""The ``superfan`` script's garbage collection: paused while a command starts, skipped at exit.

Starting a command imports SQLAlchemy, its ORM and the models, several hundred thousand objects
that live until the process ends. CPython's collector is triggered by allocations, so while they
are built it runs again and again, each full pass walking everything built so far; and when the
process ends the interpreter runs full passes over all of it once more. Neither frees anything
that matters: together they cost a ``superfan fan`` about 0.1 s of CPU (a fifth of it).

So :func:`bot.cli.main` (the script; a test driving ``app`` in its own process is not affected)
calls :func:`pause`; the first :func:`bot.cli_support.current_config` (every command asks for the
config before it works on data) calls :func:`resume`, which moves what exists by then out of the
collector's sight (:func:`gc.freeze`: later passes skip it) and turns it back on, so a long command
(``run``, ``import``, ``rescore``) collects as usual; and :func:`skip_at_exit` freezes again once
the command is done. Frozen objects are still freed by reference counting; only reference cycles
among them are left to the operating system, which takes the whole process's memory back anyway.
Output does not depend on them: commands close their files and database, ``sys.stdout`` is
flushed, and ``atexit`` handlers (logging's flush) run as before.
"""

from __future__ import annotations

import gc

_paused = False


def pause() -> None:
    """No collections until :func:`resume` (the command's imports are kept anyway)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Keep everything built so far out of later passes, and collect as usual from now on."""
    global _paused
    if _paused:
        _paused = False
        gc.freeze()
        gc.enable()


def skip_at_exit() -> None:
    """The command is done: the interpreter's last passes would only walk what the OS frees anyway."""
    gc.freeze()
