"""Waking a blocked event loop from another thread: an eventfd, or a pipe where there is none."""

from __future__ import annotations

import os


class Waker:
    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            self.fd = self._write_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
            self._is_eventfd = True
        else:
            self.fd, self._write_fd = os.pipe()
            for fd in (self.fd, self._write_fd):
                os.set_blocking(fd, False)
            self._is_eventfd = False

    def wake(self) -> None:
        try:
            if self._is_eventfd:
                os.eventfd_write(self._write_fd, 1)
            else:
                os.write(self._write_fd, b"\0")
        except BlockingIOError:
            pass  # the counter (or pipe) is full: the loop is certain to wake anyway

    def drain(self) -> None:
        try:
            if self._is_eventfd:
                os.eventfd_read(self.fd)  # one read resets the counter
            else:
                while os.read(self.fd, 4096):
                    pass
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.fd)
        if self._write_fd != self.fd:
            os.close(self._write_fd)
        self.fd = self._write_fd = -1
