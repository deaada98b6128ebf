# Cython declarations for conn.py (pure-Python mode): Conn as an extension type.
from .buffer cimport InboundBuffer

cdef class Conn(InboundBuffer):
    cdef public object _fd, _sock, _loop, _out, _state, _err, _remote, _local, _close_callbacks
    cdef public object _seen, _paused, _codec_state, _tls, context
    cdef object __weakref__
