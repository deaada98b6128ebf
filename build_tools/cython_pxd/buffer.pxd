# Cython declarations for buffer.py (pure-Python mode): InboundBuffer as an extension type.
cdef class InboundBuffer:
    cdef public object _src
    cdef public Py_ssize_t _pos
    cdef public Py_ssize_t _read_size
    cdef public Py_ssize_t _small_reads
