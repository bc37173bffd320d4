"""The group a fit trains in: `LocalGroup`, one process, where every exchange is a no-op.

The training loop (nnfast.training) talks to its group only through these methods;
`nnfast.distributed.DataParallel` implements the same ones over MPI. So the loop has no
branch of its own for data-parallel training, and this class documents what a group is.
"""


class LocalGroup:
    """One process training alone: a group of size 1 with nothing to exchange."""

    rank, size, is_root = 0, 1, True
    comm_time = 0.0                  # seconds spent exchanging gradients: none

    def agree(self, failure=None, stop=False):
        """Raise `failure` (this process's error, or None); else return `stop` (whether
        training stops after this epoch). A group raises on every rank if any failed."""
        if failure is not None:
            raise failure
        return stop

    def share(self, value):
        """A group gives every rank rank 0's `value` (any picklable object)."""
        return value

    def check_config(self, config):
        """A group raises ValueError on every rank unless each passes the same fit
        configuration (nnfast._backup.fit_config)."""

    def start(self, params, grads, optimizer, state, order):
        """A group gives every rank rank 0's params, optimizer state, TrainState and
        sample order before the first step."""

    def batch_rows(self, rows):
        """Rows of a mini-batch of `rows` that this rank computes: all of them."""
        return rows

    def dropout_seed(self, seed):
        """The dropout seed of this rank: the network's own."""
        return seed

    def threads(self, team):
        """The team size of a step on this rank: all of it."""
        return team

    def step(self, step, idx, div, t, rule, dropout_step, threads, interrupted):
        """One training step of the mini-batch `idx` on the compiled `step`: gradients
        (summed, divided by `div`) and, when the loss is finite, the update `rule` as the
        optimizer's step `t`, fused in one call. Returns (mean loss, correct predictions,
        interrupted): a group ORs `interrupted` (Ctrl-C seen here) over its ranks."""
        loss, correct = step.step(idx, div, dropout_step, threads, t, rule)
        return loss / div, correct, interrupted
