# Cython declarations for eventloop.py: the reactor's connection variable is a Conn.
from .conn cimport Conn
