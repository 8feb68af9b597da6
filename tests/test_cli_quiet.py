"""The command's stderr filter: Orbax's closed-loop tracebacks go, everything else stays."""

import io
import sys
import threading

from jaxdl.cli import quiet

NOISE_PIECES = ["Traceback (most recent call last):\n", '  File "base_events.py", line 806\n',
                "    ", "self._check_closed()", "\n", "RuntimeError", ": ",
                "Event loop is closed"]  # the printer's own pieces; its newline comes later


def test_closed_loop_tracebacks_are_dropped_in_pieces_and_the_rest_is_kept():
    out = io.StringIO()
    stream = quiet.NoiseFilter(out)
    stream.write("before\n")
    for piece in NOISE_PIECES:
        stream.write(piece)
        stream.flush()  # another thread's log handler may flush mid-traceback
    stream.write("\n")
    stream.write("Traceback (most recent call last):\n  File 'x.py'\nValueError: real\n")
    stream.write("jaxdl: error: what happened\n")
    stream.release()
    assert out.getvalue() == ("before\nTraceback (most recent call last):\n  File 'x.py'\n"
                              "ValueError: real\njaxdl: error: what happened\n")


def test_threads_interleaving_their_tracebacks_are_told_apart():
    out = io.StringIO()
    stream = quiet.NoiseFilter(out)
    real = ["Traceback (most recent call last):\n", "  File 'y.py'\n", "    y()\n",
            "KeyError: 'k'\n"]  # as many pieces as the noise: the threads write in turns
    barrier = threading.Barrier(2)

    def write(pieces):
        for piece in pieces:
            barrier.wait()
            stream.write(piece)

    threads = [threading.Thread(target=write, args=(pieces,))
               for pieces in (NOISE_PIECES[:3] + ["RuntimeError: Event loop is closed\n"], real)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stream.release()
    assert out.getvalue() == "".join(real)


def test_an_unfinished_traceback_is_still_shown_when_released():
    out = io.StringIO()
    stream = quiet.NoiseFilter(out)
    stream.write("Traceback (most recent call last):\n  File 'z.py'\n")
    stream.release()
    assert out.getvalue() == "Traceback (most recent call last):\n  File 'z.py'\n"


def test_the_filter_is_only_on_while_a_command_from_python_runs():
    before = sys.stderr
    with quiet.library_noise_kept_off(debug=False):
        assert isinstance(sys.stderr, quiet.NoiseFilter)
    assert sys.stderr is before
    with quiet.library_noise_kept_off(debug=True):
        assert sys.stderr is before

