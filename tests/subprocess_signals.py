"""For tests that Ctrl-C a child process."""

import signal


def sigint_as_at_a_terminal() -> None:
    """`preexec_fn` for the child: SIGINT back to its default action before exec. A shell without
    job control starts background commands (`bash .ci/run &`) with SIGINT ignored, children inherit
    that, and Python then never turns SIGINT into KeyboardInterrupt: a Ctrl-C test must not depend
    on how its runner was started."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
