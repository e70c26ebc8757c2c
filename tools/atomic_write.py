"""Files the Python tools write (benchmark JSON, plots) appear whole or not at all: written to a temporary
file beside the target, flushed to disk, then renamed over it (os.replace), as tools/atomic_file.cpp does
for the C++ tools. A tool killed mid-write leaves the old file, never a truncated one."""
import os
import tempfile


def write_atomically(path, data, mode="w"):
    """Writes `data` (str for mode "w", bytes for "wb") to `path` atomically."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=os.path.basename(path) + ".", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, mode) as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise


def save_figure_atomically(figure, path, **options):
    """matplotlib's savefig, atomically (the format from the path's extension, as savefig picks it)."""
    import io
    buffer = io.BytesIO()
    figure.savefig(buffer, format=os.path.splitext(path)[1].lstrip(".") or "png", **options)
    write_atomically(path, buffer.getvalue(), "wb")
