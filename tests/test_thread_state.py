"""gthread app threads keep one Python thread state for their whole life
(as gunicorn's Python threads do), so `threading.local` data survives from
one request to the next on the same thread. Before, every request attached
with a fresh thread state and such data was lost (docs/profile.md, change 5)."""

from wsgi_helpers import one_request


def test_threading_local_persists_across_requests(start_server):
    server = start_server("-k", "gthread", "--threads", "1", "-b", "127.0.0.1:0", "threadlocal:app")
    seen = [one_request(server.port, "/")[2].split() for _ in range(3)]
    assert [n for n, _ in seen] == [b"1", b"2", b"3"]
    assert len({ident for _, ident in seen}) == 1
