"""Writing files atomically: a temporary file in the same folder, fsync, rename."""
import os
import tempfile


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
    TypeError if `path` is not a path; ValueError if it is an existing directory or its
    folder does not exist.
    """
    try:
        path = os.fsdecode(path)                 # bytes paths too
    except TypeError:
        raise TypeError(f"{caller}: path must be a str or os.PathLike, got "
                        f"{type(path).__name__}") from None
    if os.path.isdir(path):
        raise ValueError(f"{caller}: {path!s} is a directory; expected the path of a file "
                         "to write")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise ValueError(f"{caller}: cannot write {path!s}: folder {folder!s} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=".nnfast-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)            # mkstemp made it 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
