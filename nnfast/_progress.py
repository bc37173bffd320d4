"""What `fit` prints when verbose: a tqdm bar over an epoch's mini-batches with the live
loss (only when stdout is a terminal), and one line per finished epoch.

Outside a terminal (CI logs, files, pipes) there is no bar, only the epoch lines, so logs
hold no carriage returns or escape codes. The bar is refreshed by tqdm at most ~10 times
a second; the loss shown is the running mean of the epoch, passed every `every` steps so
that formatting never shows up in a step's time.
"""
import sys


def _is_terminal(stream):
    try:
        return stream.isatty()
    except (AttributeError, ValueError):         # no isatty, or a closed stream
        return False


class EpochProgress:
    """Progress of one epoch: `update(k, loss)` every few steps, `close()` at the end,
    then `line(text)` to print the epoch's summary."""

    def __init__(self, verbose, n_batches, epoch, epochs, stream=None):
        self.stream = stream if stream is not None else sys.stdout
        self.verbose = bool(verbose)
        self.every = max(1, n_batches // 200)
        self.bar = None
        if self.verbose and _is_terminal(self.stream):
            from tqdm.auto import tqdm
            self.bar = tqdm(total=n_batches, desc=f"epoch {epoch + 1}/{epochs}",
                            unit="batch", file=self.stream, leave=False, mininterval=0.1,
                            dynamic_ncols=True)

    def update(self, steps, loss):
        """`steps` more mini-batches done; `loss` the running mean loss of the epoch."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4f}", refresh=False)
            self.bar.update(steps)

    def close(self):
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def line(self, text):
        if self.verbose:
            print(text, file=self.stream, flush=True)
