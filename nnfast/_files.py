"""Writing files atomically: a temporary file in the same folder, fsync, rename."""
import os
import signal
import stat
import threading

try:
    import fcntl
except ImportError:                 # not POSIX: no lock, the rename is still atomic
    fcntl = None


def write_atomically(path, write, caller):
    """Write the file `path` with ``write(f)`` (f: a binary file object), atomically.

    The data goes to a temporary name in the same folder, is flushed to disk, then
    renamed over `path`: an interrupted write never leaves a partial file, and an
    existing file is replaced only by a complete one.

    Parameters
    ----------
    path : str or os.PathLike
    write : callable taking one binary file object
    caller : str
        Named in the error messages, e.g. "save".

    Raises
    ------
    TypeError if `path` is not a path; ValueError if it is an existing directory, FIFO,
    device or socket, or its folder does not exist.
    """
    try:
        path = os.fsdecode(path)                 # bytes paths too
    except TypeError:
        raise TypeError(f"{caller}: path must be a str or os.PathLike, got "
                        f"{type(path).__name__}") from None
    if os.path.isdir(path):
        raise ValueError(f"{caller}: {path!s} is a directory; expected the path of a file "
                         "to write")
    try:
        mode = os.stat(path).st_mode            # through a symlink: what it points to
    except FileNotFoundError:
        mode = None
    if mode is not None and not stat.S_ISREG(mode):
        raise ValueError(f"{caller}: {path!s} exists and is not a regular file (a FIFO, "
                         "device or socket); refusing to replace it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{caller}: cannot write {path!s}: folder {folder!s} does not exist")
    # One predictable temporary name per target: a writer killed outright (SIGKILL) leaves
    # at most this one file, which the next save to the same path reuses.
    tmp = os.path.join(folder, f".nnfast-{os.path.basename(path)}.tmp")
    with _TermCleanup(tmp):
        try:
            with _open_locked(tmp) as f:
                write(f)
                f.flush()
                os.fsync(f.fileno())
                os.replace(tmp, path)           # under the lock: a waiter reopens
        except BaseException:
            _unlink_quietly(tmp)
            raise


def _open_locked(tmp):
    """`tmp` opened for writing, empty, under an exclusive lock: two processes saving to
    the same path take turns instead of writing into one file. Never follows a symlink
    planted at the temporary name."""
    flags = os.O_WRONLY | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    while True:
        fd = os.open(tmp, flags, 0o666)         # the umask applies, as for any new file
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:                                # the holder before may have renamed it
                same = os.path.samestat(os.fstat(fd), os.stat(tmp))
            except FileNotFoundError:
                same = False
            if same:
                os.ftruncate(fd, 0)
                return os.fdopen(fd, "wb")
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _unlink_quietly(path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


class _TermCleanup:
    """Within (main thread, SIGTERM at its default): SIGTERM removes the temporary file,
    then ends the process by SIGTERM as it would have."""

    def __init__(self, tmp):
        self.tmp, self._previous = tmp, None

    def _handle(self, signum, frame):
        _unlink_quietly(self.tmp)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)

    def __enter__(self):
        if (hasattr(signal, "SIGTERM") and threading.current_thread() is threading.main_thread()
                and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL):
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False
