/* os.read and os.write for the reactor's non-blocking descriptors, without releasing the GIL.

   os.read/os.write release the GIL around every system call (a mutex and a condition
   variable, ~400 instructions each way: a sixth of a small message's cost, compiled).
   A read or write of a non-blocking socket never waits, so holding the GIL through it
   costs other threads nothing they would notice.  Same results and errors as os.read
   and os.write (BlockingIOError for EAGAIN, OSError with errno; EINTR retried after the
   signal handlers ran, as PEP 475 does).  Used only where the descriptor is known to be
   non-blocking: gnetpy/syscalls.py.  Part of the optional compiled build (setup.py). */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <errno.h>
#include <limits.h>
#include <unistd.h>

/* A descriptor as os.read takes it: any C int (a bad one is EBADF from the call). */
static int as_fd(PyObject *o) {
    long v = PyLong_AsLong(o);
    if (v == -1 && PyErr_Occurred()) return -1;
    if (v < INT_MIN || v > INT_MAX) { PyErr_SetString(PyExc_OverflowError, "fd is greater than maximum"); return -1; }
    return (int)v;
}

static PyObject *sysio_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "read(fd, n)"); return NULL; }
    int fd = as_fd(args[0]);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    Py_ssize_t n = PyLong_AsSsize_t(args[1]);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (n < 0) { errno = EINVAL; return PyErr_SetFromErrno(PyExc_OSError); }
    PyObject *buf = PyBytes_FromStringAndSize(NULL, n);
    if (buf == NULL) return NULL;
    ssize_t r;
    for (;;) {
        r = read(fd, PyBytes_AS_STRING(buf), (size_t)n);
        if (r >= 0) break;
        /* errno is saved first: a signal handler run by PyErr_CheckSignals may change it. */
        int saved = errno;
        if (saved != EINTR || PyErr_CheckSignals()) {
            Py_DECREF(buf);
            if (saved != EINTR) { errno = saved; return PyErr_SetFromErrno(PyExc_OSError); }
            return NULL;
        }
    }
    if (r != n && _PyBytes_Resize(&buf, r) < 0) return NULL;
    return buf;
}

static PyObject *sysio_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 2) { PyErr_SetString(PyExc_TypeError, "write(fd, data)"); return NULL; }
    int fd = as_fd(args[0]);
    if (fd == -1 && PyErr_Occurred()) return NULL;
    Py_buffer view;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0) return NULL;
    ssize_t r;
    for (;;) {
        r = write(fd, view.buf, (size_t)view.len);
        if (r >= 0) break;
        if (errno != EINTR || PyErr_CheckSignals()) {
            int saved = errno;
            PyBuffer_Release(&view);
            if (saved != EINTR) { errno = saved; return PyErr_SetFromErrno(PyExc_OSError); }
            return NULL;
        }
    }
    PyBuffer_Release(&view);
    return PyLong_FromSsize_t(r);
}

static PyMethodDef methods[] = {
    {"read", (PyCFunction)(void (*)(void))sysio_read, METH_FASTCALL, "os.read without releasing the GIL"},
    {"write", (PyCFunction)(void (*)(void))sysio_write, METH_FASTCALL, "os.write without releasing the GIL"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "gnetpy._sysio", NULL, -1, methods};

PyMODINIT_FUNC PyInit__sysio(void) { return PyModule_Create(&module); }
